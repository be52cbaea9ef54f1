"""Checks on where an export writes, made before anything is merged: a directory we can write in, on a disk
with room for everything the export will write."""
import os
import shutil
import tempfile
from pathlib import Path

from common.errors import UserError


def nearest_existing(path: Path) -> Path:
    """`path` or its closest ancestor that exists: what the export creates lives on that one's disk."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return path


def check_output_dir(out: Path, run_dir: Path):
    """Refuse an --out that is a file, that lies in a directory we cannot write in, or that would write into the
    saved run itself (its own folder, adapter/ or a checkpoint: the export's adapter/ would land on the run's).
    os.access answers for permissions; a probe file also catches what it does not see (a read-only mount, a full
    quota, root squash)."""
    resolved, run_dir = Path(out).resolve(), Path(run_dir).resolve()
    inside = [p for p in (resolved, *resolved.parents) if p.parent == run_dir]
    if resolved == run_dir or (inside and (inside[0].name == "adapter" or inside[0].name.startswith("checkpoint-"))):
        raise UserError(f"--out {out}: that is inside the saved run {run_dir} (its folder, adapter/ or a checkpoint), "
                        f"which the export must not change; leave --out unset ({run_dir / 'export'}) or give a "
                        "directory outside the run")
    existing = nearest_existing(out)
    if not existing.is_dir():
        where = f"--out {out}" + ("" if existing == Path(out).absolute() else f": {existing}")
        raise UserError(f"{where} is a file, not a directory; give --out a directory (it is created if missing)")
    if not os.access(existing, os.W_OK | os.X_OK) or (reason := probe_write(existing)):
        reason = probe_write(existing) or "permission denied"
        raise UserError(f"cannot write in {existing} ({reason}); make it writable or choose another directory "
                        "with --out")


def probe_write(directory: Path) -> str | None:
    """None when a file can be made in `directory`; otherwise why not, in the system's words."""
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".export-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        return err.strerror[:1].lower() + err.strerror[1:]
    return None


def mount_point(path: Path) -> Path:
    path = nearest_existing(path)
    while not os.path.ismount(path):
        path = path.parent
    return path


def disk_name(mount: Path) -> str:
    """'the disk mounted at /work (/dev/sdb1)': the mount point, and the device where /proc/mounts says."""
    device = None
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 1 and fields[1] == str(mount):
                device = fields[0]  # the last one listed is the one in effect
    except OSError:
        pass
    return f"the disk mounted at {mount}" + (f" ({device})" if device else "")


def check_free_space(directory: Path, needs: dict[str, float]):
    """Refuse before writing anything when the disk holding `directory` cannot take `needs` (bytes by item)."""
    probe = nearest_existing(directory)
    disk = disk_name(mount_point(probe))
    free = shutil.disk_usage(probe).free
    total = sum(needs.values())
    parts = ", ".join(f"{name} {size_text(size)}" for name, size in needs.items())
    print(f"disk: the export needs about {size_text(total)} ({parts}); {size_text(free)} free on {disk}")
    if total > free:
        raise UserError(f"not enough disk space on {disk}, for {directory}: the export needs "
                        f"about {size_text(total)} ({parts}) and {size_text(free)} is free; free some space or "
                        "write to another disk with --out")


def disk_filled_up(path: Path) -> UserError:
    """The one line for a disk that filled up while `path` was written (by us or by llama.cpp), after the free-space
    check: another process wrote to it meanwhile, or the estimate was short. The caller has removed the temporary
    file, so nothing is kept under that name."""
    free = shutil.disk_usage(nearest_existing(Path(path))).free
    return UserError(f"{disk_name(mount_point(Path(path)))} filled up while {path} was written: {size_text(free)} is "
                     "free; nothing was kept under that name; free some space, or write to another disk with --out")


def size_text(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.1f} GB" if n_bytes >= 1e8 else f"{n_bytes / 1e6:.1f} MB"


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())

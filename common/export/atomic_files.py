"""Files and folders that appear complete or not at all.

Everything an export writes goes first to a temporary name in the same folder and is renamed when complete: a
failed or killed step leaves nothing under the final name, and the next export removes what a killed one left
behind. The rename is atomic on a local POSIX file system; FUSE mounts (Colab's Google Drive) need not make it so.
Replacing an existing output (--overwrite) deletes it before the rename: a step killed between the two leaves
neither the old output nor the new one, never a half-written one.
"""
import json
import os
import shutil
from pathlib import Path

from common.errors import is_disk_full
from common.export.destination import disk_filled_up


def temporary_name(final: Path) -> Path:
    """Where `final` is written first: the same folder, a name no reader looks for, tagged with our process id."""
    final = Path(final)
    return final.with_name(f".{final.name}.partial-{os.getpid()}")


def remove(path: Path):
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(folder: Path):
    """Temporary files or folders left by an export that was killed (its process is gone)."""
    for path in Path(folder).glob(".*.partial-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            print(f"removing {path}, left by an export that did not finish")
            remove(path)


def publish(temporary: Path, final: Path):
    """Rename the finished `temporary` to `final`, replacing what is there (callers reach this only when
    replacing was allowed: --overwrite, or a stale file they have already refused otherwise)."""
    if Path(final).exists():
        remove(final)
    os.replace(temporary, final)


def write_text_atomic(path: Path, text: str):
    """`text` into `path` (a Modelfile, a record): a full disk is one line, and leaves nothing under the name."""
    tmp = temporary_name(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        publish(tmp, path)
    except OSError as err:
        if not is_disk_full(err):
            raise
        remove(tmp)
        raise disk_filled_up(path) from None
    finally:
        remove(tmp)


def write_json_atomic(path: Path, value):
    write_text_atomic(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")

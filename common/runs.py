"""Run directories: a saved run is never changed or deleted unless the user asks, and --resume continues exactly.

A run directory holds run_config.json (written when training starts), checkpoint-N/ every save_steps, and adapter/
when training has finished. Rules, checked in the config cell before anything is loaded (plan_run_dir) and applied
only once the run really starts training (open_run_dir):
  - a new run never writes into a directory that holds a saved run (adapter/ or a checkpoint) or anything that is
    not a run: it goes to OUTPUT_DIR-2, -3, ..., created atomically (two runs started at once get two directories);
    a directory holding only a run that never saved anything (it failed before its first checkpoint) is reused;
  - --overwrite replaces only a directory that is a run of these recipes (it has run_config.json), and only after
    every check has passed: the old run is set aside and deleted once the new adapter is saved;
  - --resume continues from the newest complete checkpoint (an incomplete one, cut off by a disconnect or a full
    disk, is skipped); it refuses a finished run with no checkpoint left, and a run whose saved settings differ
    from this command's in anything but the length of training; a checkpoint that already reached the training
    length asked for changes nothing (exit 0);
  - a directory in use is locked by its run: the system's lock on the directory itself (flock, released by the
    system when the process ends, so a deleted or rewritten lock file cannot hide a live run), and RUN_DIR/.run.lock
    (pid and host of the run, removed when it ends) for the messages and for other machines: a run that is still
    going is never reused, resumed or replaced; a lock file whose process has ended is reported and ignored;
  - the earlier run left by an --overwrite that was stopped before its new adapter was saved is named at the next
    run and kept; the next --overwrite or --resume of that directory deletes it once its own adapter is saved.
"""
import atexit
import dataclasses
import fcntl
import json
import math
import os
import re
import shutil
import socket
import struct
import sys
import time
import zipfile
from pathlib import Path

from common.errors import UserError

# Settings a resumed run may change: how long it trains and what happens after. Anything else changes the model or
# the training, so a checkpoint made with other values would be continued as something it is not.
RESUMABLE_CHANGES = {"resume", "overwrite", "output_dir", "max_steps", "num_train_epochs", "save_steps",
                     "eval_prompts", "max_new_tokens", "export", "export_quants", "skip_bad_rows"}
CONFIG_FILE = "run_config.json"
LOCK_FILE = ".run.lock"
# The run directories this process holds locked (flock on the directory): resolved path -> the open descriptor.
HELD: dict[str, int] = {}


@dataclasses.dataclass
class RunPlan:
    """Where a run will write, decided before anything is loaded."""
    run_dir: Path
    checkpoint: Path | None  # the checkpoint to resume from
    replaces: Path | None = None  # --overwrite: the earlier run set aside once training starts
    reuses: bool = False  # the directory exists and holds nothing saved, or is the run --resume continues
    numbered: bool = False  # run_dir is OUTPUT_DIR-N because OUTPUT_DIR was taken
    leftovers: list[Path] = dataclasses.field(default_factory=list)  # set aside by an interrupted --overwrite


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why a checkpoint cannot be resumed from (a file cut off while saving), or None when it looks complete.
    The Trainer writes trainer_state.json last; safetensors files state their own length in their header, and
    torch's .pt files are zip archives whose directory is written at the very end."""
    state = checkpoint / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return "trainer_state.json is cut off"
    for file in sorted(checkpoint.iterdir()):
        if file.suffix == ".safetensors":
            with open(file, "rb") as f:
                head = f.read(8)
                size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
                header = f.read(size) if size > 0 else b""
            try:
                offsets = [end for v in json.loads(header).values() if isinstance(v, dict)
                           for end in v.get("data_offsets", [])[1:]]
            except ValueError:
                return f"{file.name} is cut off"
            if file.stat().st_size < 8 + size + max(offsets, default=0):
                return f"{file.name} is cut off"
        elif file.suffix in (".pt", ".pth", ".bin"):
            try:
                with zipfile.ZipFile(file):
                    pass
            except (zipfile.BadZipFile, OSError):
                return f"{file.name} is cut off"
    return None


def newest_checkpoint(run_dir, log=print) -> Path | None:
    """The complete checkpoint-N with the highest N; incomplete newer ones are skipped, and said so."""
    steps = sorted(((int(m.group(1)), p) for p in Path(run_dir).glob("checkpoint-*")
                    if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and p.is_dir()), reverse=True)
    for _, checkpoint in steps:
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return checkpoint
        log(f"--resume: skipping {checkpoint.name}, which is incomplete ({problem})")
    return None


def job_id() -> str | None:
    """A torchrun/accelerate job, by its rendezvous address: no two jobs that run at once share it."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "MASTER_ADDR" in os.environ:
        return f"{os.environ['MASTER_ADDR']}:{os.environ.get('MASTER_PORT')}"
    return None


def lock_text() -> str:
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "job": job_id(), "started": time.time()}
    return json.dumps(owner) + "\n"


def read_lock(lock: Path) -> dict | None:
    try:
        owner = json.loads(lock.read_text(encoding="utf-8"))
        return owner if isinstance(owner, dict) else {}
    except FileNotFoundError:
        return None
    except (ValueError, OSError):
        return {}  # unreadable: no process to check, so it is treated as stale


def is_ours(owner: dict) -> bool:
    """This process (a notebook kernel running the cells again), or another process of this torchrun job: they plan
    the directory too, maybe after the main process has locked it, and must see it as theirs."""
    return (owner.get("host") == socket.gethostname() and owner.get("pid") == os.getpid()) or \
        (job_id() is not None and owner.get("job") == job_id())


def is_alive(owner: dict) -> bool:
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0 or not owner.get("host"):
        return False  # an unreadable lock names no process to wait for
    if owner["host"] != socket.gethostname():
        return True  # a process on another machine cannot be checked from here: assume it still runs
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def held_by_a_live_process(directory: Path) -> bool | None:
    """Whether another process holds `directory` locked (hold_directory). The system releases such a lock when its
    process ends, however it ends, so it answers even when .run.lock was deleted or rewritten. None where the file
    system has no flock (some network and FUSE mounts): then only .run.lock tells."""
    if str(Path(directory).resolve()) in HELD:
        return False
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared: two probes never block each other
        return False
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)  # and with it the probe's shared lock


def in_use_by(directory: Path, log=print) -> str | None:
    """`pid N on HOST` when another run that is still going holds the directory; a stale lock is reported."""
    lock = directory / LOCK_FILE
    if lock.is_dir() or (lock.exists() and not lock.is_file()):
        raise UserError(f"{lock} is a {'directory' if lock.is_dir() else 'special file'}, not a run's lock file; "
                        f"nothing was changed: remove it (rm -r {lock}) and run again")
    owner = read_lock(lock)
    if owner is not None and is_ours(owner):
        return None
    if held_by_a_live_process(directory):
        if owner and is_alive(owner):
            return f"pid {owner.get('pid')} on {owner.get('host')}, {lock}"
        return (f"a process that holds the directory locked, though {lock} "
                f"{'is gone' if owner is None else 'no longer names it'}")
    if owner is None:
        return None
    if is_alive(owner):
        return f"pid {owner.get('pid')} on {owner.get('host')}, {lock}"
    log(f"{lock} is stale: the run that held it (pid {owner.get('pid')} on {owner.get('host')}) has ended; "
        f"{directory} is treated as not in use")
    return None


def hold_directory(directory: Path) -> bool:
    """Lock `directory` itself (flock, exclusive) for as long as this process runs; False when a live process holds
    it. Retried for a moment: another run's probe (held_by_a_live_process) holds a shared lock for an instant. True
    without a lock where the file system has none (.run.lock alone marks the run there)."""
    key = str(Path(directory).resolve())
    if key in HELD:
        return True
    fd = os.open(directory, os.O_RDONLY)
    for _ in range(10):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            HELD[key] = fd
            return True
        except BlockingIOError:
            time.sleep(0.02)
        except OSError:
            break
    os.close(fd)
    return held_by_a_live_process(directory) is None


def let_go(directory: Path) -> None:
    fd = HELD.pop(str(Path(directory).resolve()), None)
    if fd is not None:
        os.close(fd)


def release_lock(lock: Path, text: str) -> None:
    try:
        if lock.read_text(encoding="utf-8") == text:
            lock.unlink()
    except OSError:
        pass


def take_lock(directory: Path, log=print) -> bool:
    """Mark the directory as in use by this process for as long as it runs: the system's lock on the directory
    (hold_directory), then .run.lock (write_lock_file). False, and nothing held, when another run has it."""
    held_before = str(Path(directory).resolve()) in HELD
    if not hold_directory(directory):
        return False
    if write_lock_file(directory, log):
        return True
    if not held_before:
        let_go(directory)
    return False


def write_lock_file(directory: Path, log=print) -> bool:
    """.run.lock, naming this process. It appears complete and only if none is there (os.link fails on an existing
    name), so two runs cannot both take it; a stale one is moved aside under a name only this process uses, and
    checked to be the one read, before this one takes its place."""
    lock, text = directory / LOCK_FILE, lock_text()
    temp = directory / f"{LOCK_FILE}.{os.getpid()}.tmp"
    temp.write_text(text, encoding="utf-8")
    try:
        for _ in range(3):
            try:
                os.link(temp, lock)
                break
            except FileExistsError:
                owner = read_lock(lock)
                if in_use_by(directory, log):
                    return False
                aside = lock.with_name(f"{LOCK_FILE}.{os.getpid()}.old")
                try:
                    os.rename(lock, aside)
                except FileNotFoundError:
                    continue
                if read_lock(aside) != owner:  # another run locked it between the read and the rename: give it back
                    try:
                        os.link(aside, lock)
                    except FileExistsError:
                        pass
                    aside.unlink()
                    return False
                aside.unlink()
        else:
            return False
    finally:
        temp.unlink()
    atexit.register(release_lock, lock, text)  # a normal end, or an exception a notebook or plain Python reports
    previous_hook = sys.excepthook

    def release_then_report(exc_type, exc, tb):  # report_user_errors ends with os._exit, which skips atexit
        release_lock(lock, text)
        previous_hook(exc_type, exc, tb)
    sys.excepthook = release_then_report
    return True


def contents(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if not p.name.startswith(LOCK_FILE)]


def set_aside(run_dir: Path) -> list[Path]:
    """Earlier runs an --overwrite of run_dir set aside (open_run_dir) and did not get to delete."""
    return sorted(run_dir.parent.glob(f".{run_dir.name}.replaced-*")) if run_dir.parent.is_dir() else []


def name_leftovers(run_dir: Path, log=print) -> list[Path]:
    """Name what an interrupted --overwrite left: without this the earlier run survives only as a hidden folder."""
    leftovers = set_aside(run_dir)
    finished = (run_dir / "adapter").exists()
    for aside in leftovers:
        log(f"{aside} holds the earlier run that an --overwrite of {run_dir} set aside and was stopped before "
            f"deleting ({run_dir} {'has' if finished else 'never got'} its new adapter); it is kept: "
            f"rename it back to {run_dir} to restore it, or delete it")
    return leftovers


def reached_the_end(checkpoint: Path, saved: dict, config: dict) -> str | None:
    """`step N of --max-steps M` when the checkpoint already trained as long as this command asks: the Trainer checks
    max_steps only after a step, so resuming it would train one step more and overwrite the finished run's files."""
    state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    step, max_steps = state.get("global_step", 0), config.get("max_steps", -1)
    if isinstance(max_steps, int) and max_steps > 0:
        return f"step {step} of --max-steps {max_steps}" if step >= max_steps else None
    epochs = config.get("num_train_epochs")
    if epochs is None:
        return None
    per_epoch = steps_per_epoch(step, state.get("epoch"), config.get("grad_accum", saved.get("grad_accum", 1)))
    if per_epoch is None:  # a state that does not say: what the same --num-train-epochs came to when it was saved
        trained_by_epochs = saved.get("max_steps", -1) in (-1, None) and saved.get("num_train_epochs") == epochs
        planned = state.get("max_steps", 0) if trained_by_epochs else 0
    else:
        planned = math.ceil(epochs * per_epoch)  # the Trainer's own count (Trainer.set_initial_training_values)
    return f"step {step} of {planned} (--num-train-epochs {epochs})" if 0 < planned <= step else None


def steps_per_epoch(step: int, epoch, grad_accum: int) -> int | None:
    """The optimizer steps in one epoch, from a checkpoint's global step and epoch; None when they do not say.
    The Trainer counts the epoch in batches: k + b/L after b of the epoch's L batches, with a step every grad_accum
    batches and one at the epoch's end, so an epoch has ceil(L / grad_accum) steps and b is grad_accum times the
    steps into the epoch (or L at its end)."""
    if not isinstance(epoch, (int, float)) or epoch <= 0 or not isinstance(step, int) or step <= 0:
        return None
    whole = round(epoch)
    if whole >= 1 and abs(epoch - whole) < 1e-9:  # at the end of an epoch
        return step // whole if step % whole == 0 else None
    done, fraction = math.floor(epoch), epoch - math.floor(epoch)
    for into in range(1, step + 1):  # steps into the current epoch; the epochs before it had step - into
        batches = into * grad_accum / fraction
        per_epoch = -(-round(batches) // grad_accum)
        if (abs(batches - round(batches)) < 1e-6 * batches and done * per_epoch + into == step
                and into < per_epoch):
            return per_epoch
    return None


def holds_saved_run(directory: Path) -> bool:
    return (directory / "adapter").exists() or any(directory.glob("checkpoint-*"))


def is_run(directory: Path) -> bool:
    return (directory / CONFIG_FILE).is_file()


def check_writable(directory: Path, flag: str = "--output-dir"):
    """Refuse a directory that is a file or cannot be written, before anything is loaded."""
    probe = directory
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{flag} {directory}: {probe} is a file, not a directory; choose another {flag}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {directory}: {probe} is not writable; choose another {flag} or fix its permissions")


def changed_settings(saved: dict, config: dict) -> list[str]:
    return [f"{key}={saved[key]!r} (now {config.get(key)!r})" for key in sorted(saved)
            if key not in RESUMABLE_CHANGES and key in config and saved[key] != config[key]]


def plan_run_dir(output_dir, config: dict, overwrite: bool = False, resume: bool = False, log=print) -> RunPlan:
    """Decide where the run goes and check it can go there, without changing anything on disk."""
    run_dir = Path(output_dir)
    if overwrite and resume:
        raise UserError("--overwrite and --resume: choose one (--resume continues the run, --overwrite replaces it)")
    check_writable(run_dir)
    owner = in_use_by(run_dir, log) if run_dir.is_dir() else None
    if owner and (overwrite or resume):
        flag = "--overwrite" if overwrite else "--resume"
        raise UserError(f"{flag}: {run_dir} is in use by a run that is still going ({owner}); nothing was changed: "
                        f"wait for it to end, or delete the lock if that process is not a run")
    leftovers = [] if owner else name_leftovers(run_dir, log)
    if resume:
        plan = plan_resume(run_dir, config, log)
    elif owner:
        plan = numbered(output_dir, f"{run_dir} is in use by a run that is still going ({owner}) and is left as it is",
                        log)
    else:
        plan = plan_new(run_dir, output_dir, overwrite, log)
    if overwrite or resume:  # the replacement the interrupted --overwrite asked for completes with this run
        plan.leftovers = leftovers
    return plan


def plan_resume(run_dir: Path, config: dict, log=print) -> RunPlan:
    if not run_dir.is_dir():
        log(f"--resume: {run_dir} does not exist yet, so training starts from step 0")
        return RunPlan(run_dir, None)
    saved = {}
    if is_run(run_dir):
        saved = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        changed = changed_settings(saved, config)
        if changed:
            raise UserError(f"--resume: {run_dir} was trained with {', '.join(changed)}; a checkpoint continues "
                            "only with its own settings: resume with those, or start a new run with another "
                            "--output-dir")
    checkpoint = newest_checkpoint(run_dir, log)
    if checkpoint is not None:
        reached = reached_the_end(checkpoint, saved, config)
        if reached:
            adapter = "" if (run_dir / "adapter").exists() else f" (adapter/ was never saved: {checkpoint} holds it)"
            log(f"--resume: {checkpoint} already reached {reached}: nothing to train, {run_dir} is left as it "
                f"is{adapter}; raise --max-steps or --num-train-epochs to train further")
            raise SystemExit(0)
        log(f"--resume: continuing from {checkpoint}")
        return RunPlan(run_dir, checkpoint, reuses=True)
    if (run_dir / "adapter").exists():
        raise UserError(f"--resume: {run_dir} is a finished run (adapter/ is saved) with no checkpoint left to "
                        "continue from; it is left as it is: train again with another --output-dir, or "
                        "replace it with --overwrite")
    if contents(run_dir) and not is_run(run_dir):
        raise UserError(f"--resume: {run_dir} holds files but no run of these recipes; choose another --output-dir")
    log(f"--resume: no checkpoint in {run_dir} yet, so training starts from step 0")
    return RunPlan(run_dir, None, reuses=True)


def plan_new(run_dir: Path, output_dir, overwrite: bool, log=print) -> RunPlan:
    if not run_dir.exists() or not contents(run_dir):
        return RunPlan(run_dir, None, reuses=run_dir.exists())
    if overwrite:
        if not is_run(run_dir):
            raise UserError(f"--overwrite: {run_dir} holds files but no run of these recipes (no {CONFIG_FILE}), so "
                            "it is not deleted; choose another --output-dir")
        log(f"--overwrite: {run_dir} will be replaced once training starts")
        return RunPlan(run_dir, None, replaces=run_dir)
    if is_run(run_dir) and not holds_saved_run(run_dir):
        log(f"{run_dir} holds a run that saved nothing (it stopped before its first checkpoint); this run reuses it")
        return RunPlan(run_dir, None, reuses=True)
    return numbered(output_dir, f"{run_dir} already holds {'a run' if is_run(run_dir) else 'files'} and is left as "
                                "it is", log)


def numbered(output_dir, why: str, log=print) -> RunPlan:
    n = 2
    while Path(f"{output_dir}-{n}").exists():
        n += 1
    log(f"{why}; this run writes to {output_dir}-{n} (--overwrite replaces a run, --resume continues it)")
    return RunPlan(Path(f"{output_dir}-{n}"), None, numbered=True)


def open_run_dir(plan: RunPlan, log=print) -> Path:
    """Create the planned run directory, lock it, and set aside the run it replaces. Called when training starts,
    after every check has passed. mkdir is atomic: if another run takes the name first, the next free NAME-N is used."""
    if plan.replaces is not None:
        owner = in_use_by(plan.replaces, log)
        if owner:  # it started after this run was planned
            raise UserError(f"--overwrite: {plan.replaces} is in use by a run that is still going ({owner}); "
                            "nothing was changed")
        aside, n = plan.replaces.with_name(f".{plan.replaces.name}.replaced-{os.getpid()}"), 2
        while aside.exists():  # left by an earlier --overwrite of this process (a notebook kernel), still kept
            aside, n = aside.with_name(f".{plan.replaces.name}.replaced-{os.getpid()}-{n}"), n + 1
        os.rename(plan.replaces, aside)
        plan.replaces = aside
    if plan.reuses and plan.run_dir.is_dir():
        if take_lock(plan.run_dir, log):
            return plan.run_dir
        if plan.checkpoint is not None:
            raise UserError(f"--resume: {plan.run_dir} was taken by another run a moment ago; nothing was changed")
    plan.run_dir.parent.mkdir(parents=True, exist_ok=True)
    stem, n = re.sub(r"-\d+$", "", str(plan.run_dir)) if plan.numbered else str(plan.run_dir), 2
    candidate = plan.run_dir
    while True:
        try:
            candidate.mkdir()
            break
        except FileExistsError:
            candidate, n = Path(f"{stem}-{n}"), n + 1
    if candidate != plan.run_dir:
        log(f"{plan.run_dir} was taken by another run a moment ago; this run writes to {candidate}")
        plan.run_dir = candidate
    take_lock(candidate, log)  # a directory this process has just created: nobody else holds it
    return candidate


def finish_replacing(plan: RunPlan, log=print) -> None:
    """Delete the run that --overwrite set aside (and any an interrupted --overwrite left), now that the new one has
    saved its adapter."""
    for aside in [plan.replaces, *plan.leftovers]:
        if aside is not None and aside.exists():
            shutil.rmtree(aside)
            log(f"--overwrite: deleted the earlier run that {plan.run_dir} replaces ({aside})")
    plan.replaces, plan.leftovers = None, []


def save_run_config(config, run_dir) -> Path:
    """run_config.json: the settings of the run, written when training starts (a run that fails before leaves none)."""
    path = Path(run_dir) / CONFIG_FILE
    values = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    path.write_text(json.dumps(values, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path

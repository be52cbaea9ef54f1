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
    from this command's in anything but the length of training.
"""
import dataclasses
import json
import os
import re
import shutil
import struct
import zipfile
from pathlib import Path

from common.errors import UserError

# Settings a resumed run may change: how long it trains and what happens after. Anything else changes the model or
# the training, so a checkpoint made with other values would be continued as something it is not.
RESUMABLE_CHANGES = {"resume", "overwrite", "output_dir", "max_steps", "num_train_epochs", "save_steps",
                     "eval_prompts", "max_new_tokens", "export", "export_quants", "skip_bad_rows"}
CONFIG_FILE = "run_config.json"


@dataclasses.dataclass
class RunPlan:
    """Where a run will write, decided before anything is loaded."""
    run_dir: Path
    checkpoint: Path | None  # the checkpoint to resume from
    replaces: Path | None = None  # --overwrite: the earlier run set aside once training starts
    reuses: bool = False  # the directory exists and holds nothing saved, or is the run --resume continues
    numbered: bool = False  # run_dir is OUTPUT_DIR-N because OUTPUT_DIR was taken


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
    if resume:
        if not run_dir.is_dir():
            log(f"--resume: {run_dir} does not exist yet, so training starts from step 0")
            return RunPlan(run_dir, None)
        if is_run(run_dir):
            saved = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
            changed = changed_settings(saved, config)
            if changed:
                raise UserError(f"--resume: {run_dir} was trained with {', '.join(changed)}; a checkpoint continues "
                                "only with its own settings: resume with those, or start a new run with another "
                                "--output-dir")
        checkpoint = newest_checkpoint(run_dir, log)
        if checkpoint is not None:
            log(f"--resume: continuing from {checkpoint}")
            return RunPlan(run_dir, checkpoint, reuses=True)
        if (run_dir / "adapter").exists():
            raise UserError(f"--resume: {run_dir} is a finished run (adapter/ is saved) with no checkpoint left to "
                            "continue from; it is left as it is: train again with another --output-dir, or "
                            "replace it with --overwrite")
        if any(run_dir.iterdir()) and not is_run(run_dir):
            raise UserError(f"--resume: {run_dir} holds files but no run of these recipes; choose another --output-dir")
        log(f"--resume: no checkpoint in {run_dir} yet, so training starts from step 0")
        return RunPlan(run_dir, None, reuses=True)
    if not run_dir.exists() or not any(run_dir.iterdir()):
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
    n = 2
    while Path(f"{output_dir}-{n}").exists():
        n += 1
    log(f"{run_dir} already holds {'a run' if is_run(run_dir) else 'files'} and is left as it is; this run writes to "
        f"{output_dir}-{n} (--overwrite replaces a run, --resume continues it)")
    return RunPlan(Path(f"{output_dir}-{n}"), None, numbered=True)


def open_run_dir(plan: RunPlan, log=print) -> Path:
    """Create the planned run directory and set aside the run it replaces. Called when training starts, after
    every check has passed. mkdir is atomic: if another run takes the name first, the next free NAME-N is used."""
    if plan.replaces is not None:
        aside = plan.replaces.with_name(f".{plan.replaces.name}.replaced-{os.getpid()}")
        os.rename(plan.replaces, aside)
        plan.replaces = aside
    if plan.reuses and plan.run_dir.is_dir():
        return plan.run_dir
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
    return candidate


def finish_replacing(plan: RunPlan, log=print) -> None:
    """Delete the run that --overwrite set aside, now that the new one has saved its adapter."""
    if plan.replaces is not None and plan.replaces.exists():
        shutil.rmtree(plan.replaces)
        log(f"--overwrite: deleted the earlier run that {plan.run_dir} replaces")
        plan.replaces = None


def save_run_config(config, run_dir) -> Path:
    """run_config.json: the settings of the run, written when training starts (a run that fails before leaves none)."""
    path = Path(run_dir) / CONFIG_FILE
    values = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    path.write_text(json.dumps(values, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path

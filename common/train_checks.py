"""Checks on the training settings, made before anything loads, and a full disk reported as an error.

The Trainer validates its arguments only once it is built, after the model has loaded (minutes, gigabytes): a typo
in --learning-rate or --grad-accum would cost all of that. Choice fields (optimizer, scheduler) are Literal types
in the recipes' Config, so the command line already refuses a wrong one and --help lists them.
"""
import contextlib
import math
import shutil
from pathlib import Path
from typing import Literal

from common.errors import UserError, is_disk_full
from common.runs import newest_checkpoint

# transformers' OptimizerNames and SchedulerType values that make sense for LoRA here (tests check each is valid).
Optimizer = Literal["adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "adamw_bnb_8bit", "adamw_torch",
                    "adamw_torch_fused", "adafactor", "sgd", "lion_8bit", "paged_lion_8bit"]
Scheduler = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                    "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay"]
SAVE_TOTAL_LIMIT = 2  # checkpoints kept on disk: the newest and one before it, in case the newest is cut off


def check_training_options(*, learning_rate: float, batch_size: int, grad_accum: int, num_train_epochs: float,
                           max_steps: int, warmup_steps: int, weight_decay: float, max_grad_norm: float,
                           save_steps: int, max_seq_length: int, eval_prompts: int, max_new_tokens: int) -> None:
    """Refuse settings the Trainer or the evaluation would fail on, or that would train nothing."""
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise UserError(f"--learning-rate {learning_rate}: must be a positive number (2e-4 is usual for LoRA)")
    for flag, value in (("--batch-size", batch_size), ("--grad-accum", grad_accum), ("--save-steps", save_steps),
                        ("--max-seq-length", max_seq_length), ("--max-new-tokens", max_new_tokens)):
        if value < 1:
            raise UserError(f"{flag} {value}: must be a positive integer")
    if max_steps == 0 or max_steps < -1:
        raise UserError(f"--max-steps {max_steps}: give a positive number of optimizer steps, or -1 to train "
                        "--num-train-epochs epochs (0 would save an untrained adapter)")
    if max_steps == -1 and not (math.isfinite(num_train_epochs) and num_train_epochs > 0):
        raise UserError(f"--num-train-epochs {num_train_epochs}: must be positive (or give --max-steps); 0 would save "
                        "an untrained adapter")
    if warmup_steps < 0:
        raise UserError(f"--warmup-steps {warmup_steps}: must be 0 or more")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise UserError(f"--weight-decay {weight_decay}: must be 0 or more")
    if not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
        raise UserError(f"--max-grad-norm {max_grad_norm}: must be positive (1.0 is usual; QLoRA uses 0.3)")
    if eval_prompts < 0:
        raise UserError(f"--eval-prompts {eval_prompts}: must be 0 or more")


def checkpoint_bytes(trainable_params: int, optim: str) -> float:
    """One checkpoint on disk: the LoRA weights in fp32, Adam's two states (8-bit ones are a quarter of fp32), and
    a few MB of tokenizer and trainer state."""
    states = 2 * (1 if "8bit" in optim else 4)
    return trainable_params * (4 + states) + 30e6


def check_disk_for_checkpoints(run_dir: Path, trainable_params: int, optim: str) -> None:
    """Refuse a run whose checkpoints and adapter will not fit the disk, naming the disk, before training starts."""
    probe = Path(run_dir)
    while not probe.exists():
        probe = probe.parent
    need = checkpoint_bytes(trainable_params, optim) * (SAVE_TOTAL_LIMIT + 1) + trainable_params * 4
    free = shutil.disk_usage(probe).free
    if need > free:
        raise UserError(f"not enough disk space in {probe}: {SAVE_TOTAL_LIMIT} checkpoints and the adapter need about "
                        f"{need / 1e9:.2f} GB and {free / 1e9:.2f} GB is free; free some space or choose another "
                        "--output-dir")


@contextlib.contextmanager
def disk_full_is_an_error(run_dir: Path):
    """A full disk while training writes (a checkpoint, the adapter): one line naming the file, the free space and
    how to go on, not a traceback. What the full disk cut off is removed, so nothing half-written keeps its final
    name: a checkpoint without its trainer_state.json (written last), adapter/ or the file being written."""
    try:
        yield
    except Exception as err:  # not only OSError: torch.save raises a RuntimeError, the tokenizers library an Exception
        if not is_disk_full(err, run_dir):
            raise
        path = Path(getattr(err, "filename", None) or last_written(run_dir) or run_dir)
        removed = remove_cut_off(Path(run_dir), path)
        free = shutil.disk_usage(run_dir).free
        kept = newest_checkpoint(run_dir, log=lambda message: None)
        start = f"from {kept.name}, the newest complete checkpoint" if kept else "from step 0: no checkpoint was done"
        raise UserError(f"the disk holding {run_dir} is full: {path} could not be written, {free / 1e6:.1f} MB is "
                        "free" + (f"; removed what it cut off ({', '.join(map(str, removed))})" if removed else "")
                        + f"; free some space, then continue with --output-dir {run_dir} --resume ({start})") from None


def last_written(run_dir: Path) -> Path | None:
    """The file most recently written under run_dir: the one a full disk cut off, when the error does not say
    (torch.save's does not)."""
    from common.runs import LOCK_FILE

    files = [p for p in Path(run_dir).rglob("*") if p.is_file() and not p.name.startswith(LOCK_FILE)]
    return max(files, key=lambda p: p.stat().st_mtime_ns, default=None)


def remove_cut_off(run_dir: Path, path: Path) -> list[Path]:
    """Delete the checkpoints a full disk left incomplete (--resume skips them anyway; deleting them gives the space
    back), and adapter/ or the single file it was writing; return what was deleted."""
    from common.runs import CONFIG_FILE, LOCK_FILE, checkpoint_problem

    removed = [c for c in sorted(run_dir.glob("checkpoint-*")) if c.is_dir() and checkpoint_problem(c)]
    try:
        top = run_dir / path.resolve().relative_to(run_dir.resolve()).parts[0]
    except (ValueError, IndexError):
        top = None
    if top is not None and top.name == "adapter" and top.is_dir():
        removed.append(top)
    elif (top is not None and top.resolve() == path.resolve() and top.is_file()
          and top.name != CONFIG_FILE and not top.name.startswith(LOCK_FILE)):
        removed.append(top)
    for item in removed:
        shutil.rmtree(item) if item.is_dir() else item.unlink()
    return removed

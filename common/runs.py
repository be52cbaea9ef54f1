"""Run directories: never overwrite a saved run silently, and resume from the newest checkpoint."""
import dataclasses
import json
import re
import shutil
from pathlib import Path


def newest_checkpoint(run_dir) -> Path | None:
    """The complete checkpoint-N with the highest N. A checkpoint cut off while saving (a Colab disconnect)
    has no trainer_state.json, which the Trainer writes last, so it is skipped."""
    steps = [(int(m.group(1)), p) for p in Path(run_dir).glob("checkpoint-*")
             if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and (p / "trainer_state.json").is_file()]
    return max(steps)[1] if steps else None


def prepare_run_dir(output_dir, overwrite: bool = False, resume: bool = False) -> tuple[Path, Path | None]:
    """The directory this run writes to, and the checkpoint to resume from (or None).

    --resume continues in output_dir from its newest checkpoint-N. Otherwise a directory that already holds
    anything is kept as it is and the run goes to output_dir-2, -3, ...; --overwrite replaces it instead.
    """
    run_dir = Path(output_dir)
    if resume:
        checkpoint = newest_checkpoint(run_dir)
        if checkpoint is None:
            print(f"--resume: no checkpoint-* in {run_dir}, so training starts from step 0")
        else:
            print(f"--resume: continuing from {checkpoint}")
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir, checkpoint
    if run_dir.exists() and any(run_dir.iterdir()):
        if overwrite:
            print(f"--overwrite: deleting the earlier run in {run_dir}")
            shutil.rmtree(run_dir)
        else:
            n = 2
            while Path(f"{output_dir}-{n}").exists():
                n += 1
            print(f"{run_dir} already holds a run and is left as it is; this run writes to {output_dir}-{n} "
                  "(--overwrite replaces it, --resume continues it)")
            run_dir = Path(f"{output_dir}-{n}")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, None


def save_run_config(config, run_dir) -> Path:
    path = Path(run_dir) / "run_config.json"
    path.write_text(json.dumps(dataclasses.asdict(config), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path

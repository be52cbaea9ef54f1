"""A saved run is never lost or changed by a later command unless the user asks: each case compares file hashes."""
import hashlib
import json
import shutil
import threading
from pathlib import Path

import pytest

from common.errors import UserError
from common.runs import RunPlan, newest_checkpoint, open_run_dir, plan_run_dir
from conftest import run

RECIPE = "recipes/deepseek_multiturn.py"
SHORT = ["--model", "tiny", "--max-steps", "4", "--save-steps", "2", "--eval-prompts", "0"]


def hashes(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny run with two checkpoints (steps 2 and 4)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = run([RECIPE, *SHORT, "--output-dir", out])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return out


def copy_of(finished: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(finished, target)
    return target


def refused(args, text):
    result = run([RECIPE, *args])
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr and text in result.stderr, result.stderr
    assert "loading " not in result.stdout  # refused before any model loads
    return result


def test_resume_of_a_finished_run_without_checkpoints_changes_nothing(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    for checkpoint in out.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)
    before = hashes(out)
    refused([*SHORT, "--output-dir", out, "--resume"], "is a finished run (adapter/ is saved) with no checkpoint left")
    assert hashes(out) == before


def test_resume_with_other_model_settings_is_refused_and_changes_nothing(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    before = hashes(out)
    result = refused([*SHORT, "--output-dir", out, "--resume", "--r", "8", "--lora-alpha", "16"], "--resume:")
    assert "lora_alpha=32 (now 16)" in result.stderr and "r=16 (now 8)" in result.stderr
    assert hashes(out) == before  # run_config.json is not rewritten


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(tmp_path):
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("my notes")
    (folder / "sub" / "data.txt").write_text("keep")
    before = hashes(folder)
    refused([*SHORT, "--output-dir", folder, "--overwrite"], "holds files but no run of these recipes")
    assert hashes(folder) == before


def test_overwrite_with_a_bad_flag_elsewhere_keeps_the_old_run(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    before = hashes(out)
    for bad in (["--max-new-tokens", "-1"], ["--learning-rate", "nan"], ["--grad-accum", "0"],
                ["--export", "gguf", "--export-quants", "q3_k_s"], ["--optim", "bogus"]):
        result = run([RECIPE, *SHORT, "--output-dir", out, "--overwrite", *bad])
        assert result.returncode == 2 and "Traceback" not in result.stderr, (bad, result.stderr[-2000:])
        assert hashes(out) == before, bad


def test_a_bad_evaluation_setting_is_refused_before_training(tmp_path):
    out = tmp_path / "r"
    refused([*SHORT, "--output-dir", out, "--max-new-tokens", "-1"], "--max-new-tokens -1: must be a positive integer")
    refused([*SHORT, "--output-dir", out, "--max-steps", "0"], "--max-steps 0")
    refused([*SHORT[:2], "--num-train-epochs", "0", "--output-dir", out], "--num-train-epochs 0")
    assert not out.exists()


def test_output_dir_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "a-file"
    target.write_text("x")
    refused([*SHORT, "--output-dir", target / "run"], "is a file, not a directory")


def test_resume_skips_a_truncated_newest_checkpoint(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    newest = out / "checkpoint-4"
    for name in ("adapter_model.safetensors", "optimizer.pt"):
        file = newest / name
        file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])  # cut off, as a full disk leaves it
        messages = []
        assert newest_checkpoint(out, log=messages.append) == out / "checkpoint-2"
        assert f"skipping checkpoint-4, which is incomplete ({name} is cut off)" in messages[0]
        shutil.copy(finished / "checkpoint-4" / name, file)
    assert newest_checkpoint(out) == newest


def test_a_run_that_never_trained_is_reused(tmp_path):
    out = tmp_path / "r"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n')
    out.mkdir()
    (out / "run_config.json").write_text(json.dumps({"model": "tiny"}))  # left by a run that failed before training
    plan = plan_run_dir(out, {"model": "tiny"}, log=lambda m: None)
    assert plan.run_dir == out and plan.reuses


def test_two_runs_opening_the_same_directory_at_once_get_two(tmp_path):
    for attempt in range(10):
        target = tmp_path / f"r{attempt}"
        plans = [plan_run_dir(target, {}, log=lambda m: None) for _ in range(2)]
        assert all(p.run_dir == target for p in plans)
        opened, barrier = [], threading.Barrier(2)

        def open_it(plan: RunPlan):
            barrier.wait()
            opened.append(open_run_dir(plan, log=lambda m: None))

        threads = [threading.Thread(target=open_it, args=(p,)) for p in plans]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert sorted(opened) == [target, Path(f"{target}-2")]


def test_overwrite_and_resume_together_are_refused(tmp_path):
    with pytest.raises(UserError, match="choose one"):
        plan_run_dir(tmp_path / "r", {}, overwrite=True, resume=True)

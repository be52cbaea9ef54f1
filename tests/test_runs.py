"""A saved run is never lost or changed by a later command unless the user asks: each case compares file hashes."""
import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from common.errors import UserError
from common.runs import RunPlan, finish_replacing, newest_checkpoint, open_run_dir, plan_run_dir, save_run_config
from conftest import run

RECIPE = "recipes/deepseek_multiturn.py"
SHORT = ["--model", "tiny", "--max-steps", "4", "--save-steps", "2", "--eval-prompts", "0"]
SHORT_2 = ["--model", "tiny", "--max-steps", "2", "--save-steps", "2", "--eval-prompts", "0", "--max-seq-length", "256"]


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


def fake_run(directory: Path, *, adapter=True, checkpoint_step=None, max_steps=2) -> Path:
    """A run directory as a recipe leaves it, without training: its files only need to be there."""
    directory.mkdir(parents=True)
    (directory / "run_config.json").write_text(json.dumps({"model": "tiny", "max_steps": max_steps}))
    if adapter:
        (directory / "adapter").mkdir()
        (directory / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    if checkpoint_step is not None:
        checkpoint = directory / f"checkpoint-{checkpoint_step}"
        checkpoint.mkdir()
        (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": checkpoint_step,
                                                                   "max_steps": max_steps}))
    return directory


def lock_naming(directory: Path, pid: int) -> None:
    (directory / ".run.lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_run_still_going_is_never_reused_resumed_or_replaced(tmp_path):
    out = fake_run(tmp_path / "run", adapter=False)  # it has written run_config.json, no checkpoint yet
    lock_naming(out, os.getppid())  # a process that is alive and is not this one
    before, messages = hashes(out), []
    plan = plan_run_dir(out, {"model": "tiny"}, log=messages.append)
    assert plan.run_dir == tmp_path / "run-2" and "in use by a run that is still going" in messages[-1]
    for flag in ("overwrite", "resume"):
        with pytest.raises(UserError, match="in use by a run that is still going"):
            plan_run_dir(out, {"model": "tiny"}, **{flag: True}, log=messages.append)
    open_run_dir(plan, log=messages.append)
    assert hashes(out) == before and json.loads((tmp_path / "run-2" / ".run.lock").read_text())["pid"] == os.getpid()


def test_a_stale_lock_is_reported_and_the_directory_reused(tmp_path):
    out = fake_run(tmp_path / "run", adapter=False)
    lock_naming(out, dead_pid())
    messages = []
    plan = plan_run_dir(out, {"model": "tiny"}, log=messages.append)
    assert plan.run_dir == out and plan.reuses
    assert any("is stale" in m and str(out / ".run.lock") in m for m in messages), messages
    assert open_run_dir(plan, log=messages.append) == out
    assert json.loads((out / ".run.lock").read_text())["pid"] == os.getpid()


def test_the_lock_is_held_while_the_run_goes_and_removed_when_it_ends(tmp_path):
    script = ("import sys\nfrom common.errors import UserError, report_user_errors\n"
              "from common.runs import open_run_dir, plan_run_dir\nsys.excepthook = report_user_errors\n"
              "run_dir = open_run_dir(plan_run_dir(sys.argv[1], {}))\n"
              "print('locked', (run_dir / '.run.lock').exists(), flush=True)\n"
              "if sys.argv[2] != 'normal':\n    raise {'user': UserError, 'bug': RuntimeError}[sys.argv[2]]('stop')\n")
    for end, code in (("normal", 0), ("user", 2), ("bug", 1)):
        out = tmp_path / end
        result = run(["-c", script, out, end])
        assert result.returncode == code and "locked True" in result.stdout, (end, result.stdout, result.stderr)
        assert not (out / ".run.lock").exists(), end


def test_a_second_run_started_while_the_first_trains_writes_elsewhere(tmp_path):
    out = tmp_path / "run"
    first = plan_run_dir(out, {"model": "tiny"}, log=lambda m: None)
    save_run_config({"model": "tiny"}, open_run_dir(first, log=lambda m: None))  # run A: training, no checkpoint yet
    before = hashes(out)
    result = run([RECIPE, *SHORT_2, "--output-dir", out])  # run B, same --output-dir
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"{out} is in use by a run that is still going (pid {os.getpid()}" in result.stdout
    assert hashes(out) == before
    assert (tmp_path / "run-2" / "adapter").is_dir() and not (tmp_path / "run-2" / ".run.lock").exists()


def test_resume_of_a_run_that_reached_max_steps_changes_nothing(tmp_path):
    out = tmp_path / "run"
    result = run([RECIPE, *SHORT_2, "--output-dir", out])
    assert result.returncode == 0 and (out / "checkpoint-2").is_dir(), result.stdout[-2000:] + result.stderr[-2000:]
    before = hashes(out)
    result = run([RECIPE, *SHORT_2, "--output-dir", out, "--resume"])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"--resume: {out / 'checkpoint-2'} already reached step 2 of --max-steps 2: nothing to train" \
        in result.stdout and "trained " not in result.stdout and "loading " not in result.stdout, result.stdout
    assert hashes(out) == before
    # a longer --max-steps continues from the checkpoint, as documented
    saved = json.loads((out / "run_config.json").read_text())
    plan = plan_run_dir(out, {**saved, "max_steps": 3}, resume=True, log=lambda m: None)
    assert plan.checkpoint == out / "checkpoint-2"


def test_an_interrupted_overwrite_names_the_earlier_run_and_deletes_it_only_when_replaced(tmp_path):
    out = fake_run(tmp_path / "run", checkpoint_step=2)
    before = hashes(out)
    plan = plan_run_dir(out, {"model": "tiny"}, overwrite=True, log=lambda m: None)
    save_run_config({"model": "tiny"}, open_run_dir(plan, log=lambda m: None))  # stopped before the new adapter
    [aside] = tmp_path.glob(".run.replaced-*")
    assert hashes(aside) == before
    messages = []
    plain = plan_run_dir(out, {"model": "tiny"}, log=messages.append)  # a plain run keeps it and names it
    assert any(str(aside) in m and "never got its new adapter" in m and "kept" in m for m in messages), messages
    assert plain.leftovers == [] and hashes(aside) == before
    messages = []
    again = plan_run_dir(out, {"model": "tiny"}, overwrite=True, log=messages.append)
    assert any(str(aside) in m for m in messages), messages
    open_run_dir(again, log=messages.append)
    (out / "adapter").mkdir()  # the new run saved its adapter
    finish_replacing(again, log=messages.append)
    deleted = [m for m in messages if "deleted the earlier run" in m]
    assert len(deleted) == 2 and any(str(aside) in m for m in deleted), messages
    assert not list(tmp_path.glob(".run.replaced-*"))

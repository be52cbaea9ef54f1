"""A saved run is never lost or changed by a later command unless the user asks: each case compares file hashes."""
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from common.errors import UserError
from common.runs import RunPlan, finish_replacing, newest_checkpoint, open_run_dir, plan_run_dir, save_run_config
from conftest import ROOT, run

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


def finished_by_epochs(directory: Path, steps: int) -> Path:
    """A run trained for one epoch of `steps` optimizer steps: its final checkpoint's state as the Trainer writes it."""
    out = fake_run(directory, checkpoint_step=steps, max_steps=-1)
    config = {"model": "tiny", "max_steps": -1, "num_train_epochs": 1.0, "grad_accum": 4}
    (out / "run_config.json").write_text(json.dumps(config))
    (out / f"checkpoint-{steps}" / "trainer_state.json").write_text(json.dumps(
        {"global_step": steps, "epoch": 1.0, "max_steps": steps, "num_train_epochs": 1}))
    return out


def test_resume_with_fewer_epochs_of_a_finished_run_changes_nothing(tmp_path):
    """--resume --num-train-epochs 0.5 of a run that trained a whole epoch: the saved epoch count was compared for
    equality only, so the run was resumed, trained nothing, and rewrote its adapter, eval and run_config.json
    (which then claimed 0.5 epochs)."""
    out = finished_by_epochs(tmp_path / "run", 38)
    saved, before, messages = json.loads((out / "run_config.json").read_text()), hashes(out), []
    with pytest.raises(SystemExit) as stop:
        plan_run_dir(out, {**saved, "num_train_epochs": 0.5}, resume=True, log=messages.append)
    assert stop.value.code == 0 and hashes(out) == before
    assert f"{out / 'checkpoint-38'} already reached step 38 of 19 (--num-train-epochs 0.5): nothing to train" \
        in messages[-1]
    # more epochs than it trained continue from the checkpoint
    assert plan_run_dir(out, {**saved, "num_train_epochs": 2.0}, resume=True, log=messages.append).checkpoint


def test_resume_by_epochs_of_a_run_trained_by_max_steps_continues(finished, tmp_path):
    """A run trained with --max-steps 4, resumed with --max-steps -1 (train the epoch): the state's max_steps (4,
    from --max-steps) was read as what the epoch count came to, and the resume was refused with a false "already
    reached step 4 of 4". The real checkpoint's state says how many steps an epoch has."""
    out = copy_of(finished, tmp_path)
    saved, messages = json.loads((out / "run_config.json").read_text()), []
    plan = plan_run_dir(out, {**saved, "max_steps": -1}, resume=True, log=messages.append)
    assert plan.checkpoint == out / "checkpoint-4" and "already reached" not in " ".join(messages), messages
    from common.runs import steps_per_epoch
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    # 300 conversations, batch 2, accumulation 4: 150 batches an epoch, ceil(150 / 4) = 38 optimizer steps
    assert steps_per_epoch(state["global_step"], state["epoch"], saved["grad_accum"]) == 38


def test_steps_per_epoch_is_the_trainers_count():
    """Every (step, epoch) a Trainer records, for epochs of 1 to 12 batches and accumulation 1 to 5, gives back its
    steps per epoch (epoch k + b/L after b batches, a step every grad_accum batches and at the epoch's end)."""
    import math

    from common.runs import steps_per_epoch

    for batches in range(1, 13):
        for grad_accum in range(1, 6):
            per_epoch, step = math.ceil(batches / grad_accum), 0
            for k in range(3):
                for into in range(1, per_epoch + 1):
                    step += 1
                    epoch = k + min(into * grad_accum, batches) / batches
                    assert steps_per_epoch(step, epoch, grad_accum) == per_epoch, (batches, grad_accum, step)


HOLDER = ("import sys\nfrom common.runs import open_run_dir, plan_run_dir\n"
          "open_run_dir(plan_run_dir(sys.argv[1], {}, log=lambda m: None), log=lambda m: None)\n"
          "print('locked', flush=True)\nsys.stdin.read()\n")


@pytest.mark.parametrize("damage", ["deleted", "rewritten"])
def test_a_live_run_whose_lock_file_was_deleted_or_rewritten_is_still_in_use(tmp_path, damage):
    """The lock file deleted or overwritten by hand while its run trains: a missing or unreadable .run.lock was
    taken as "no owner", and a second run reused the live directory, overwriting its run_config, checkpoints,
    adapter and eval. The run's lock on the directory itself outlives its file."""
    import sys

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        save_run_config({"model": "tiny"}, out)
        lock = out / ".run.lock"
        lock.unlink() if damage == "deleted" else lock.write_text("edited by hand")
        before, messages = hashes(out), []
        plan = plan_run_dir(out, {"model": "tiny"}, log=messages.append)
        assert plan.run_dir == tmp_path / "run-2", messages
        assert "in use by a run that is still going (a process that holds the directory locked" in messages[-1]
        for flag in ("overwrite", "resume"):
            with pytest.raises(UserError, match="in use by a run that is still going"):
                plan_run_dir(out, {"model": "tiny"}, **{flag: True}, log=messages.append)
        reuse = RunPlan(out, None, reuses=True)  # planned before the file was damaged
        assert open_run_dir(reuse, log=messages.append) == tmp_path / "run-2"
        assert hashes(out) == before
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    # once its process has ended, the directory is free again
    assert plan_run_dir(out, {"model": "tiny"}, log=lambda m: None).run_dir == out


def test_a_lock_that_is_a_directory_is_one_line_before_anything_loads(tmp_path):
    """.run.lock made a directory (by hand, or a tool): IsADirectoryError once the model had loaded."""
    out = fake_run(tmp_path / "run", adapter=False)
    (out / ".run.lock").mkdir()
    for flags in ({}, {"resume": True}, {"overwrite": True}):
        with pytest.raises(UserError, match=rf"^{re.escape(str(out / '.run.lock'))} is a directory, not a run's lock "
                                            r"file; nothing was changed: remove it \(rm -r .*\) and run again$"):
            plan_run_dir(out, {"model": "tiny"}, **flags, log=lambda m: None)

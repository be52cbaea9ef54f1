"""The DeepSeek recipe under torchrun with two CPU processes (gloo), exactly as docs/multi-gpu.md's command runs it,
in 4-bit as a GPU user runs it (bitsandbytes' CPU backend):
different shards per process, one adapter written by the main process, the loss curve of a one-process run of
the same global batch, and --resume. (`accelerate launch --cpu --num_processes 2` starts one process, not two,
so the test uses torchrun, the launcher accelerate itself uses on GPUs.)"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, run
from test_qlora import load_4bit, with_adapter
from test_recipe import RUN_AND_PROBE

TORCHRUN = Path(sys.executable).parent / "torchrun"
# Measured: the two-process curve equals the one-process curve of the same global batch to 1e-6 (the Trainer
# averages the loss over the trained tokens of all processes, and DDP averages their gradients).
CURVE_TOLERANCE = 1e-4


def torchrun(*args):
    command = [str(TORCHRUN), "--nproc_per_node", "2", "recipes/deepseek_multiturn.py", *map(str, args)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**__import__("os").environ, "PYTHONUNBUFFERED": "1"})


def losses(run_dir: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in json.loads((run_dir / "log_history.json").read_text()) if "loss" in e}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    two = torchrun("--model", "tiny", "--load-in-4bit", "--max-steps", "6", "--output-dir", root / "two")
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    # one process, the same global batch: 2 per process x 2 processes = 4
    one = run(["-c", RUN_AND_PROBE, "--model", "tiny", "--load-in-4bit", "--max-steps", "6", "--batch-size", "4",
               "--output-dir", root / "one"])
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    return root, two.stdout


def test_two_processes_train_different_shards_and_the_main_one_speaks(runs):
    _, stdout = runs
    assert stdout.count("distributed: 2 processes (gloo)") == 1  # printed by the main process only
    assert stdout.count("memory plan:") == 1 and stdout.count("preflight:") == 1
    counts, shared = re.search(r"sequences trained per process \[(\d+), (\d+)\], (\d+) trained by more than one",
                               stdout).groups()[:2], int(re.search(r"\], (\d+) trained by more", stdout).group(1))
    assert all(int(c) == 6 * 2 * 4 for c in counts) and shared == 0  # 6 steps x batch 2 x accumulation 4 each
    assert "global batch: 2 per process x 4 accumulation x 2 processes = 16 examples" in stdout


def test_the_loss_falls_and_follows_the_one_process_curve(runs):
    root, _ = runs
    two, one = losses(root / "two"), losses(root / "one")
    assert sorted(two) == sorted(one) == list(range(1, 7))
    assert two[6] < two[1]
    assert max(abs(two[s] - one[s]) for s in two) < CURVE_TOLERANCE


def test_exactly_one_adapter_and_it_reloads_as_trained(runs):

    root, _ = runs
    assert sorted(p.name for p in root.iterdir()) == ["one", "two"]  # no two-2: one run directory
    assert len(list((root / "two").rglob("adapter_model.safetensors"))) == 2  # adapter/ and checkpoint-6/
    adapter = root / "two" / "adapter"
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert json.loads((root / "two" / "run_config.json").read_text())["load_in_4bit"] is True
    ids = torch.load(root / "one" / "probe_ids.pt")
    with torch.no_grad():
        base_logits = load_4bit(base)(input_ids=ids).logits
        logits = with_adapter(load_4bit(base), adapter)(input_ids=ids).logits
    trained = torch.load(root / "one" / "probe_logits.pt")  # the one-process model, in memory after training
    # In 4-bit TRL keeps the LoRA weights in bfloat16 (test_qlora.with_adapter), and each of the 6 updates rounds
    # them; two processes (gradients averaged over gloo) and one round differently: measured 6e-4 on these logits
    # (in float32 the two runs agree to 1e-6). What the adapter changed is far larger than that.
    gap, change = (logits - trained).abs().max().item(), (logits - base_logits).abs().max().item()
    assert gap < 2e-3 and change > 20 * gap, (gap, change)


def test_resume_continues_under_torchrun(runs):
    root, _ = runs
    resumed = torchrun("--model", "tiny", "--load-in-4bit", "--max-steps", "8", "--output-dir", root / "two",
                       "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "--resume: continuing from" in resumed.stdout and "checkpoint-6" in resumed.stdout
    assert sorted(losses(root / "two")) == list(range(1, 9))


def test_a_data_error_under_torchrun_is_shown(tmp_path):
    """torch's init_process_group wraps the excepthook and buffers what it prints until the hook returns, and
    report_user_errors exits (os._exit(2)) before that: both ranks printed nothing, and the user saw only torchrun's
    ChildFailedError. The data is read before any model loads, so this takes seconds."""
    broken = tmp_path / "BROKEN.jsonl"
    broken.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n", encoding="utf-8")
    result = torchrun("--model", "tiny", "--train-file", broken, "--output-dir", tmp_path / "run")
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert lines and all(line.startswith(f"error: {broken}:1: ") for line in lines), result.stderr[-3000:]
    assert "no assistant turn" in lines[0]
    # Each process exits 2; torchrun itself then exits 1 (its code for any failed child), naming the 2 per rank.
    assert result.returncode == 1 and "exitcode  : 2" in result.stderr
    assert not (tmp_path / "run").exists()
    # torchrun's ChildFailedError report comes last: the line says so, and the report ends with it as the cause
    # (it said "To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html")
    follows = " (the launcher's report of the stopped processes follows, and ends with this line as their cause)"
    assert all(line.endswith(follows) for line in lines), lines
    causes = [line.strip() for line in result.stderr.splitlines() if line.strip().startswith("traceback :")]
    assert len(causes) == 2 and all(cause == f"traceback : {lines[0].removesuffix(follows)}" for cause in causes), \
        result.stderr[-3000:]
    last = [line for line in result.stderr.splitlines() if line.strip() and set(line.strip()) != {"="}][-1]
    assert last.strip() == causes[-1]

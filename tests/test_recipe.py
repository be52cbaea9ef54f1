"""recipes/deepseek_multiturn.py --model tiny, end to end, the way a user runs it."""
import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

from conftest import ROOT, run

PROBE = "After training, keep the in-memory model's logits on a probe, to compare with the reloaded adapter."
RUN_AND_PROBE = """
import runpy, sys, torch
sys.argv = ["recipes/deepseek_multiturn.py", *sys.argv[1:]]
g = runpy.run_path("recipes/deepseek_multiturn.py", run_name="__main__")
model, tokenizer = g["model"], g["tokenizer"]
ids = tokenizer("User: 考试前睡不着怎么办？\\n\\nAssistant: 先深呼吸。", return_tensors="pt")["input_ids"]
with torch.no_grad():
    torch.save(model(input_ids=ids).logits, g["run_dir"] / "probe_logits.pt")
torch.save(ids, g["run_dir"] / "probe_ids.pt")
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = run(["-c", RUN_AND_PROBE, "--model", "tiny", "--output-dir", out])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result.stdout, result.stderr


def test_loss_falls_and_counts_are_logged(tiny_run):
    out, stdout, _ = tiny_run
    losses = [e["loss"] for e in json.loads((out / "log_history.json").read_text()) if "loss" in e]
    assert len(losses) >= 20
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1
    assert "loss " in stdout and "(first) ->" in stdout
    assert "train [all_turns]: 300 examples from 300 conversations" in stdout
    assert "trained of" in stdout and "dropped" in stdout
    assert "preflight:" in stdout and "⟦" in stdout and "one forward pass: loss" in stdout
    # the README's tiny run says which path it ran
    assert "path: float32 LoRA, no quantisation on the CPU (the GPU default, 4-bit QLoRA, runs here with " in stdout
    assert json.loads((out / "run_config.json").read_text())["load_in_4bit"] is False
    evaluation = json.loads((out / "eval.json").read_text())
    held_out = evaluation["held_out_loss"]  # per assistant token: the base as it trained, then with LoRA
    assert held_out["tuned"] < held_out["base"] - 0.05 and held_out["base"] > losses[-1], held_out
    assert f"held-out loss per assistant token (all_turns): {held_out['base']:.4f} (base) -> " in stdout
    assert len(evaluation["replies"]) == 3 and all({"base", "tuned"} <= set(r) for r in evaluation["replies"])


def test_the_log_shows_the_training_bar_and_no_millisecond_bars(tiny_run):
    """TRL's dataset preparation and transformers' loading and writing of the tiny model (milliseconds of work) show
    no progress bars (common/startup.py); training, 5 seconds here, does."""
    _, stdout, stderr = tiny_run
    for bar in ("Truncating train dataset", "Dropping fully masked examples", "Loading weights",
                "Writing model shards"):
        assert bar not in stdout + stderr, bar
    assert re.search(r"\| 38/38 \[", stderr), stderr[-2000:]  # transformers' bar for the 38 training steps


def test_adapter_reloads_with_identical_logits(tiny_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, _, _ = tiny_run
    adapter = out / "adapter"
    assert (adapter / "adapter_model.safetensors").exists() and (adapter / "adapter_config.json").exists()
    config = json.loads((out / "run_config.json").read_text())
    assert config["model"] == "tiny" and config["label_layout"] == "all_turns"
    base_path = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    ids = torch.load(out / "probe_ids.pt")
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
        model = PeftModel.from_pretrained(base, adapter).eval()
        logits = model(input_ids=ids).logits
    trained = torch.load(out / "probe_logits.pt")
    assert torch.allclose(logits, trained, atol=1e-4), (logits - trained).abs().max()
    assert not torch.allclose(logits, base_logits, atol=1e-3)  # the adapter really changed the model


def digest(directory: Path) -> str:
    return hashlib.sha256((directory / "adapter" / "adapter_model.safetensors").read_bytes()).hexdigest()


def test_never_overwrites_a_saved_run_and_resumes(tmp_path):
    out = tmp_path / "run"
    common = ["recipes/deepseek_multiturn.py", "--model", "tiny", "--max-steps", "4", "--save-steps", "2",
              "--eval-prompts", "0"]
    first = run([*common, "--output-dir", out])
    assert first.returncode == 0, first.stderr[-3000:]
    before = digest(out)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]

    second = run([*common, "--output-dir", out])
    assert second.returncode == 0, second.stderr[-3000:]
    assert "this run writes to" in second.stdout and (tmp_path / "run-2" / "adapter").exists()
    assert digest(out) == before  # the first run's adapter is untouched

    resumed = run([*common[:-4], "--max-steps", "6", "--save-steps", "2", "--eval-prompts", "0",
                   "--output-dir", out, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "continuing from" in resumed.stdout and "checkpoint-4" in resumed.stdout
    steps = [e["step"] for e in json.loads((out / "log_history.json").read_text()) if "loss" in e]
    assert steps[-1] == 6 and 5 in steps

    replaced = run([*common, "--output-dir", out, "--overwrite"])
    assert replaced.returncode == 0 and "--overwrite" in replaced.stdout
    assert not (tmp_path / "run-3").exists()


def test_bad_data_stops_before_loading_the_model(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    result = run(["recipes/deepseek_multiturn.py", "--model", "tiny", "--train-file", bad,
                  "--output-dir", tmp_path / "r"])
    assert result.returncode == 2
    assert f"error: {bad}:1: messages: no assistant turn" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()


def test_help_lists_every_config_field():
    result = run(["recipes/deepseek_multiturn.py", "--help"])
    assert result.returncode == 0
    for flag in ("--model", "--output-dir", "--label-layout", "--resume", "--overwrite", "--skip-bad-rows", "--r"):
        assert flag in result.stdout
    assert "rank of the LoRA matrices" in result.stdout


def test_killed_run_resumes_to_the_same_loss_curve(tiny_run, tmp_path):
    """A Colab disconnect: the README's run is killed mid-training (after its checkpoint at step 20 of 38), then
    `--resume` continues from the newest checkpoint; the curve is the uninterrupted run's (tiny_run, the same settings:
    evaluation comes after training and draws no random numbers before it)."""
    import signal
    import subprocess
    import sys
    import time

    whole, _, _ = tiny_run
    args = ["recipes/deepseek_multiturn.py", "--model", "tiny"]
    killed_dir = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, *args, "--output-dir", str(killed_dir)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed_dir / "checkpoint-20" / "trainer_state.json").exists() and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed_dir / "adapter").exists()  # it really died mid-training

    resumed = run([*args, "--output-dir", killed_dir, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "continuing from" in resumed.stdout and "checkpoint-20" in resumed.stdout

    def curve(directory):
        return {e["step"]: e["loss"] for e in json.loads((directory / "log_history.json").read_text()) if "loss" in e}

    expected, got = curve(whole), curve(killed_dir)
    assert sorted(got) == sorted(expected) == list(range(1, 39))
    assert max(abs(got[step] - expected[step]) for step in expected) < 1e-3


def test_verify_refuses_an_export_that_lost_the_fine_tune_in_one_line_and_keeps_its_files(tiny_run, tmp_path):
    """The run's adapter zeroed after training (a merge that lost what it learned): --verify measures merged16 at the
    base's held-out loss, not the trained one, and says so in one line with both losses, exit code 2, files kept."""
    import shutil

    from safetensors.torch import load_file, save_file

    out, _, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(out / "adapter", copy / "adapter")
    for name in ("run_config.json", "eval.json"):
        shutil.copy(out / name, copy / name)
    weights = copy / "adapter" / "adapter_model.safetensors"
    save_file({k: torch.zeros_like(v) if "lora_B" in k else v for k, v in load_file(weights).items()}, weights)
    held_out = json.loads((out / "eval.json").read_text())["held_out_loss"]
    result = run(["scripts/export.py", copy, "--to", "merged16", "--verify"])
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert "merged16 loses the fine-tune: held-out loss" in line and f"vs {held_out['tuned']:.3f} trained" in line
    assert (copy / "export" / "merged16" / "config.json").is_file()  # kept to look at

"""Exports are keyed to the adapter they came from: an existing merged16/ or f16 GGUF made from another run's
adapter, or from this adapter before more training, is refused (and left byte for byte as it was), never
packaged as if it were this run's."""
import hashlib
import json
from pathlib import Path

import pytest
import torch

from conftest import run
from test_export import export, make_run


def hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def refused(*args) -> str:
    """The one `error: ...` line of an export that must fail (torch may log warnings of its own before it)."""
    result = run(["scripts/export.py", *args])
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.stderr.strip().endswith(errors[0]), result.stderr[-3000:]
    return errors[0]


def train_further(run_dir: Path):
    """What --resume does to a run's adapter: the same files, new weights."""
    from safetensors.torch import load_file, save_file
    weights_file = run_dir / "adapter" / "adapter_model.safetensors"
    weights = load_file(weights_file)
    save_file({k: v + 0.01 * torch.ones_like(v) if "lora_B" in k else v for k, v in weights.items()}, weights_file)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("two-runs")
    return make_run(root / "run-a", "deepseek", seed=10), make_run(root / "run-b", "deepseek", seed=11)


def test_another_runs_merged16_is_not_reused(two_runs, tmp_path):
    run_a, run_b = two_runs
    out = tmp_path / "shared-out"
    export(run_a, "--to", "merged16", "--out", out)
    record = json.loads((out / "merged16" / "export_source.json").read_text())
    assert record["adapter"] == str((run_a / "adapter").resolve()) and len(record["adapter_sha256"]) == 64
    before = hashes(out)
    message = refused(run_b, "--to", "gguf", "--quant", "f16", "--out", out)
    assert f"{out / 'merged16'} was made from another adapter, {run_a / 'adapter'}" in message
    assert "pass --overwrite to replace it, or --out DIR" in message
    assert hashes(out) == before  # run A's export untouched, and no GGUF of run A's weights under run B's name
    assert not (out / "gguf").exists() or not list((out / "gguf").glob("*.gguf"))


def test_export_after_more_training_is_not_the_old_weights(two_runs, tmp_path):
    run_a, _ = two_runs
    out = tmp_path / "out"
    export(run_a, "--to", "gguf", "--quant", "f16", "--out", out)
    f16 = out / "gguf" / f"{run_a.name}-f16.gguf"
    first = hashes(out)
    assert json.loads(f16.with_suffix(".source.json").read_text())["adapter_sha256"] == \
        json.loads((out / "merged16" / "export_source.json").read_text())["adapter_sha256"]
    train_further(run_a)
    # q8_0 alone would reuse merged16/ and the f16 GGUF: both are the adapter before it trained further.
    message = refused(run_a, "--to", "gguf", "--quant", "q8_0", "--out", out)
    assert "as it was earlier" in message and "trained further since?" in message
    assert hashes(out) == first
    # --overwrite makes them again, from the adapter as it is now.
    export(run_a, "--to", "gguf", "--quant", "f16", "--out", out, "--overwrite")
    second = hashes(out)
    for name in ("merged16/model.safetensors", f"gguf/{f16.name}", "merged16/export_source.json"):
        assert second[name] != first[name], name
    new_sha = json.loads((out / "merged16" / "export_source.json").read_text())["adapter_sha256"]
    assert json.loads(f16.with_suffix(".source.json").read_text())["adapter_sha256"] == new_sha


def test_same_adapter_reuses_merged16_and_says_so(two_runs, tmp_path):
    _, run_b = two_runs
    out = tmp_path / "out"
    export(run_b, "--to", "merged16", "--out", out)
    weights = (out / "merged16" / "model.safetensors").stat().st_ino
    stdout = export(run_b, "--to", "gguf", "--quant", "f16", "--out", out)
    assert "merged16: using the existing" in stdout and "made from this run's adapter" in stdout
    assert (out / "merged16" / "model.safetensors").stat().st_ino == weights
    message = refused(run_b, "--to", "merged16", "--out", out)
    assert "already exists (made from this same adapter)" in message

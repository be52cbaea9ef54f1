"""Does a fine-tune make a real model better, and does the improvement survive the export? On SmolLM2-135M-Instruct
(--model smollm2-135m, a trained chat model: tests/test_smollm2.py), with the recipe unchanged, taught the bundled
style-and-facts task (datasets/style_facts: every reply opens with "Ahoy!" and closes with "Fair winds!"), once in
float32 LoRA and once in 4-bit QLoRA, each exported to GGUF q8_0 and q4_k_m with the recipe's own --verify:

  - the held-out loss per assistant token (unseen wordings of the taught facts) falls by at least half;
  - at least 90% of the greedy replies to held-out prompts take the taught style (the base model: none or nearly);
  - llama.cpp's greedy replies from each GGUF take it as often, less at most one reply;
  - merged16 keeps the fine-tune: its held-out loss within 3% of the trained model's (the export's --verify line);
  - QLoRA's held-out loss is within 10% of LoRA's;
  - merged onto the 16-bit weights instead (--merge-onto original), the 4-bit run's export loses part of it.
Each run is one recipe process shared by the tests of its precision; the ratios are printed (pytest -s)."""
import json
import re

import pytest

from conftest import run
from dev.learning_table import gguf_replies, prompts_of, styled

PROMPTS = 20  # held-out prompts answered by the base, the tuned model and each GGUF
# Short: 20 steps of 4 conversations at 1e-3 (the recipe's default 2e-4 needs about 60 steps for the same).
ARGS = ["--model", "smollm2-135m", "--max-steps", "20", "--learning-rate", "1e-3", "--warmup-steps", "2",
        "--batch-size", "4", "--grad-accum", "1", "--save-steps", "1000", "--eval-prompts", str(PROMPTS),
        "--max-new-tokens", "32", "--export", "gguf", "--export-quants", "q8_0", "q4_k_m"]
KEEPS = re.compile(r"merged16 keeps the fine-tune: held-out loss (\d+\.\d+) vs (\d+\.\d+) trained, base (\d+\.\d+)")


def train(tmp_path_factory, name: str, *extra: str) -> dict:
    out = tmp_path_factory.mktemp(name) / "run"
    result = run(["recipes/deepseek_multiturn.py", *ARGS, *extra, "--output-dir", out], timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return {"dir": out, "stdout": result.stdout, "eval": json.loads((out / "eval.json").read_text())}


@pytest.fixture(scope="module")
def lora(smollm2, tmp_path_factory):
    return train(tmp_path_factory, "smollm2-float32")


@pytest.fixture(scope="module")
def qlora(smollm2, tmp_path_factory):
    return train(tmp_path_factory, "smollm2-4bit", "--load-in-4bit")


@pytest.fixture(scope="module", params=["lora", "qlora"])
def trained(request):
    return request.param, request.getfixturevalue(request.param)


def test_the_held_out_loss_falls_by_at_least_half(trained):
    name, result = trained
    held_out = result["eval"]["held_out_loss"]
    print(f"\n{name}: held-out loss per assistant token {held_out['base']:.3f} (base) -> {held_out['tuned']:.3f}")
    assert held_out["tuned"] <= held_out["base"] / 2, held_out


def test_the_replies_take_the_taught_style(trained):
    name, result = trained
    replies = result["eval"]["replies"]
    assert len(replies) == PROMPTS
    tuned, base = sum(styled(r["tuned"]) for r in replies), sum(styled(r["base"]) for r in replies)
    print(f"\n{name}: replies in the taught style: base {base}/{PROMPTS}, tuned {tuned}/{PROMPTS}")
    assert tuned >= 0.9 * PROMPTS and base <= 0.1 * PROMPTS, [r["tuned"] for r in replies]


def test_llama_cpp_replies_from_each_gguf_take_it_as_often(trained):
    name, result = trained
    prompts = prompts_of(result["dir"], PROMPTS)
    tuned = sum(styled(r["tuned"]) for r in result["eval"]["replies"])
    for quant in ("q8_0", "q4_k_m"):
        replies = gguf_replies(result["dir"] / "export" / "gguf" / f"run-{quant}.gguf", prompts, max_new_tokens=32)
        count = sum(map(styled, replies))
        print(f"\n{name} -> GGUF {quant}: llama.cpp's replies in the taught style {count}/{PROMPTS} "
              f"(the trained model: {tuned}/{PROMPTS})")
        assert count >= tuned - 1, replies


def test_merged16_keeps_the_fine_tune(trained):
    name, result = trained
    found = KEEPS.search(result["stdout"])
    assert found, result["stdout"][-3000:]
    merged, tuned, base = map(float, found.groups())
    print(f"\n{name}: {found.group(0)}")
    assert abs(merged - tuned) <= 0.03 * tuned and base == pytest.approx(result["eval"]["held_out_loss"]["base"],
                                                                          abs=1e-3)


def test_qlora_learns_as_well_as_lora(lora, qlora):
    ratio = qlora["eval"]["held_out_loss"]["tuned"] / lora["eval"]["held_out_loss"]["tuned"]
    print(f"\nheld-out loss, QLoRA / LoRA: {ratio:.3f}")
    assert ratio <= 1.10


def test_merged_onto_the_16bit_weights_the_4bit_run_loses_part_of_what_it_learned(qlora, tmp_path):
    """What every 4-bit export did before: the adapter merged into W, not into the dequant(nf4(W)) it trained on."""
    result = run(["scripts/export.py", qlora["dir"], "--to", "merged16", "--merge-onto", "original", "--verify",
                  "--out", tmp_path / "original"], timeout=600)
    printed = result.stdout + result.stderr
    numbers = re.search(r"held-out loss (\d+\.\d+) vs (\d+\.\d+) trained, base (\d+\.\d+)", printed)
    assert numbers, printed[-3000:]
    merged, tuned, base = map(float, numbers.groups())
    lost = (merged - tuned) / (base - tuned)
    print(f"\n4-bit run merged onto the 16-bit weights: held-out loss {merged:.3f} vs {tuned:.3f} trained, base "
          f"{base:.3f}: {lost:.1%} of the improvement lost (exit code {result.returncode})")
    assert merged > tuned and "warning: a 4-bit run merged onto the 16-bit weights" in printed
    if lost > 0.05:  # refused in one line, the files kept for a look
        assert result.returncode == 2 and "merged16 loses the fine-tune" in result.stderr
        assert (tmp_path / "original" / "merged16" / "config.json").is_file()


def test_the_modelfile_writes_the_default_system_prompt_training_saw(qlora):
    """SmolLM2's ChatML template adds its own system prompt: Ollama must render it too (tests/test_modelfile.py
    checks the TEMPLATE against the chat template on many conversations; here, the export wrote it)."""
    modelfile = (qlora["dir"] / "export" / "gguf" / "run-q4_k_m.Modelfile").read_text()
    assert 'TEMPLATE """' in modelfile and "You are a helpful AI assistant named SmolLM" in modelfile, modelfile
    assert modelfile.splitlines()[2].startswith('TEMPLATE """{{- with .Messages }}'), modelfile

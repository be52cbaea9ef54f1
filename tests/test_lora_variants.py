"""Every LoRA variant trains the tiny Llama-3 model, its loss falls, and its adapter reloads exactly: in 16-bit, and
in 4-bit (QLoRA: bitsandbytes' CPU backend) for those a GPU user runs in 4-bit. PiSSA stays 16-bit by design
(refused with --load-in-4bit: tests/test_early_checks.py)."""
import json

import pytest
import torch

from conftest import run
from test_qlora import load_4bit, with_adapter
from test_recipe import RUN_AND_PROBE

VARIANTS = {
    "lora": [],
    "rslora": ["--use-rslora"],
    "dora": ["--use-dora"],
    "gaussian": ["--init", "gaussian"],
    "pissa": ["--init", "pissa"],
    "loftq": ["--init", "loftq"],
    "adalora": ["--adalora", "--init-r", "6", "--target-r", "2", "--tinit", "2", "--tfinal", "3"],
}
# 4-bit: short sequences, as these check the 4-bit plumbing of each variant. Plain LoRA on the Guanaco-style data:
# llama_text's other format (the 16-bit runs use its instruction/response records).
FOUR_BIT = ["--load-in-4bit", "--max-seq-length", "256"]
GUANACO = ["--train-file", "datasets/guanaco_style/train.jsonl", "--eval-file", "datasets/guanaco_style/test.jsonl"]
VARIANTS.update({"lora-4bit-guanaco": FOUR_BIT + GUANACO, "rslora-4bit": FOUR_BIT + VARIANTS["rslora"],
                 "dora-4bit": FOUR_BIT + VARIANTS["dora"], "adalora-4bit": FOUR_BIT + VARIANTS["adalora"],
                 "loftq-4bit": FOUR_BIT + VARIANTS["loftq"]})
# The class of every layer LoRA wraps, from the in-memory model after training.
LAYERS = """
layers = {name: type(m.base_layer).__name__ for name, m in model.named_modules() if hasattr(m, "base_layer")}
(g["run_dir"] / "layers.json").write_text(__import__("json").dumps(layers))
"""


def train(tmp_path, name, steps=12):
    out = tmp_path / name
    script = RUN_AND_PROBE.replace("deepseek_multiturn", "llama_text") + LAYERS
    result = run(["-c", script, "--model", "tiny", "--max-steps", steps, "--eval-prompts", "0",
                  "--output-dir", out, *VARIANTS[name]])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result.stdout


def check_loftq_base_is_the_nf4_of_the_original(out):
    import bitsandbytes as bnb
    from safetensors.torch import load_file

    from common.tiny.llama import tiny_model_path
    saved = load_file(out / "loftq_base" / "model.safetensors")
    original = load_4bit(tiny_model_path("llama3"))
    checked = 0
    for name, module in original.named_modules():
        if isinstance(module, bnb.nn.Linear4bit) and name != "lm_head":
            nf4 = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
            assert torch.equal(saved[f"{name}.weight"].to(nf4.dtype), nf4), name
            checked += 1
    assert checked == 14


def reload_logits(out, four_bit: bool, double_quant: bool = True):
    """The adapter on a fresh base: in 4-bit when it trained in 4-bit (transformers + bitsandbytes, nf4 with double
    quantisation, as Unsloth loads it). LoftQ's loftq_base/ holds the nf4 values themselves: quantized again without
    double quantisation (whose 8-bit block scales would be rounded a second time) they are exactly what trained."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = out / "adapter"
    base_path = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    if four_bit:
        model = with_adapter(load_4bit(base_path, double_quant), adapter)
    else:
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32),
                                          adapter).eval()
    with torch.no_grad():
        return model(input_ids=torch.load(out / "probe_ids.pt")).logits


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_trains_and_reloads(tmp_path, name):
    out, stdout = train(tmp_path, name)
    losses = [e["loss"] for e in json.loads((out / "log_history.json").read_text()) if "loss" in e]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.03, losses
    four_bit = "4bit" in name
    layers = set(json.loads((out / "layers.json").read_text()).values())
    assert layers == ({"Linear4bit"} if four_bit else {"Linear"}), layers
    assert json.loads((out / "run_config.json").read_text())["load_in_4bit"] is four_bit
    trained = torch.load(out / "probe_logits.pt")
    reloaded = reload_logits(out, four_bit, double_quant=name != "loftq-4bit")
    assert torch.allclose(reloaded, trained, atol=1e-4), (reloaded - trained).abs().max()
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    name = name.split("-")[0]
    if name == "pissa":  # converted to a plain LoRA against the original base model: rank 2r
        assert config["init_lora_weights"] is True and config["r"] == 32
    if name == "loftq":  # LoftQ's base weights are saved beside the adapter
        assert config["base_model_name_or_path"] == str(out / "loftq_base")
        if four_bit:  # ... and they are what the 4-bit layers multiplied by: bitsandbytes' nf4 of the original weights
            check_loftq_base_is_the_nf4_of_the_original(out)
    if name in ("rslora", "dora"):
        assert config["use_" + name] is True
    if name == "adalora":
        assert config["peft_type"] == "ADALORA"


def test_adalora_reallocates_ranks(tmp_path):
    out, stdout = train(tmp_path, "adalora", steps=20)
    ranks = json.loads((out / "adalora_ranks.json").read_text())
    assert len(ranks) == 14  # 2 layers x 7 linear layers
    assert "AdaLoRA final ranks:" in stdout and "rank" in stdout
    # every layer started at init_r=6; the budget (target_r=2 on average) was moved between layers
    assert sum(ranks.values()) == 2 * len(ranks)
    assert len(set(ranks.values())) > 1 and max(ranks.values()) > 2


# Bad LoRA options and combinations: tests/test_early_checks.py, every recipe, before any model loads.

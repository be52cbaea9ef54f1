"""The path users run on a GPU, 4-bit QLoRA, run on the CPU: bitsandbytes' CPU backend quantizes the tiny model to
nf4 (Linear4bit layers) and Unsloth's CPU backend trains LoRA over it. One DeepSeek run is shared: its layers, its
loss, its adapter on a fresh 4-bit base, --resume, merged16 against 4-bit + adapter, and the GGUF parity check.
(The LoRA variants in 4-bit: tests/test_lora_variants.py; torchrun in 4-bit: tests/test_distributed.py.)
What this does not prove: bitsandbytes' CUDA kernels, GPU speed and GPU memory (dev/gpu_check does)."""
import json
import shutil

import pytest
import torch

from common.four_bit import unpacked_cpu_4bit
from conftest import run
from test_export import PARITY
from test_recipe import RUN_AND_PROBE

# After training: the class of every layer LoRA wraps, from the in-memory model the recipe trained.
RUN_PROBE_AND_LAYERS = RUN_AND_PROBE + """
layers = {name: f"{type(m.base_layer).__module__}.{type(m.base_layer).__name__}"
          for name, m in model.named_modules() if hasattr(m, "base_layer") and hasattr(m, "lora_A")}
(g["run_dir"] / "layers.json").write_text(__import__("json").dumps(layers))
"""
# Few steps on short sequences: this checks the 4-bit plumbing, not how well a random model learns.
ARGS = ["--model", "tiny", "--load-in-4bit", "--max-steps", "8", "--save-steps", "4", "--warmup-steps", "1",
        "--max-seq-length", "256", "--eval-prompts", "0"]


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("qlora") / "run"
    result = run(["-c", RUN_PROBE_AND_LAYERS, *ARGS, "--output-dir", out])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result.stdout


def losses(run_dir) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in json.loads((run_dir / "log_history.json").read_text()) if "loss" in e}


def load_4bit(path, double_quant: bool = True):
    """A fresh 4-bit base as a user loads one with transformers: nf4, double quantisation, as Unsloth loads it."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=double_quant,
                               bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=quant, dtype=torch.float32).eval()
    return unpacked_cpu_4bit(model)  # what the run computed: float32 matmuls, not bitsandbytes' bf16 repacking


def with_adapter(base, adapter_dir):
    """PEFT's reload of an adapter, computing as the trained model did. TRL's SFTTrainer casts a 4-bit model's LoRA
    weights to bfloat16 (QLoRA's recipe; not DoRA's magnitude), and they are saved so; PEFT would load them into
    float32 layers, and the logits would then differ by the bfloat16 rounding of the LoRA path, not by anything
    saved. So each weight gets the dtype it was saved in."""
    from peft import PeftModel
    from safetensors import safe_open

    with safe_open(str(adapter_dir / "adapter_model.safetensors"), "pt") as saved:
        dtypes = {name: saved.get_slice(name).get_dtype() for name in saved.keys()}
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    for name, parameter in model.named_parameters():
        saved_as = dtypes.get(name.replace(".default", ""))
        if saved_as is not None:
            parameter.data = parameter.data.to(getattr(torch, {"BF16": "bfloat16", "F16": "float16"}.get(saved_as,
                                                                                                      "float32")))
    return unpacked_cpu_4bit(model)  # what the run computed: float32 matmuls, not bitsandbytes' bf16 repacking


def adapter_base(run_dir) -> str:
    return json.loads((run_dir / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]


def test_the_base_layers_are_linear4bit_and_the_loss_falls(qlora_run):
    out, stdout = qlora_run
    layers = json.loads((out / "layers.json").read_text())
    assert len(layers) == 2 * 7  # 2 layers x q, k, v, o, gate, up, down
    assert set(layers.values()) == {"bitsandbytes.nn.modules.Linear4bit"}, set(layers.values())
    assert "path: 4-bit QLoRA, bitsandbytes Linear4bit layers on the CPU" in stdout
    assert "4-bit = True" in stdout  # Unsloth's own line: it loaded the model in 4-bit
    assert json.loads((out / "run_config.json").read_text())["load_in_4bit"] is True
    curve = losses(out)
    assert sorted(curve) == list(range(1, 9))
    assert (curve[7] + curve[8]) / 2 < (curve[1] + curve[2]) / 2 - 0.02, curve


def test_the_adapter_reloads_onto_a_fresh_4bit_base_with_the_same_logits(qlora_run):
    out, _ = qlora_run
    model = with_adapter(load_4bit(adapter_base(out)), out / "adapter")
    with torch.no_grad():
        logits = model(input_ids=torch.load(out / "probe_ids.pt")).logits
    trained = torch.load(out / "probe_logits.pt")
    assert torch.allclose(logits, trained, atol=1e-4), (logits - trained).abs().max()


def test_resume_in_4bit_continues_the_loss_curve_exactly(qlora_run, tmp_path):
    """The run as a Colab disconnect leaves it after its checkpoint-4: resumed, steps 5-8 are the whole run's."""
    out, _ = qlora_run
    cut = tmp_path / "cut"
    shutil.copytree(out / "checkpoint-4", cut / "checkpoint-4")
    shutil.copy(out / "run_config.json", cut / "run_config.json")
    resumed = run(["recipes/deepseek_multiturn.py", *ARGS, "--output-dir", cut, "--resume"])
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "continuing from" in resumed.stdout and "checkpoint-4" in resumed.stdout
    whole, again = losses(out), losses(cut)
    assert sorted(again) == list(range(1, 9))
    gap = max(abs(again[step] - whole[step]) for step in range(5, 9))
    print(f"\n4-bit resume: steps 5-8 within {gap:.2e} of the uninterrupted run")
    # As for the 16-bit kill-and-resume test (test_recipe.py): the same steps, on the same batches, with the saved
    # optimizer and RNG; what is left is float rounding (measured ~1.5e-4 on a loss of 8.3: LoRA is in bfloat16).
    assert gap < 1e-3, (again, whole)


@pytest.fixture(scope="module")
def exported(qlora_run):
    """What `--export gguf --export-quants q8_0` does after training, with the recipe's --verify."""
    import contextlib
    import io

    from common.export import export_run

    out, _ = qlora_run
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = export_run(out, "gguf", ["q8_0"], verify=True)
    return out, result, printed.getvalue()


def probe_logits(model_dir, ids):
    from transformers import AutoModelForCausalLM
    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)(input_ids=ids).logits


def test_the_4bit_layers_as_trained_are_bit_for_bit_what_a_4bit_load_multiplies_by(qlora_run):
    """adapter/quantized_layers.json names every layer the run trained in 4-bit and how it was quantized; the 16-bit
    base's weights quantized and dequantized again so are exactly a 4-bit load's: what the export merges onto."""
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM

    from common.four_bit import read_4bit_layers, to_4bit_as_trained

    out, _ = qlora_run
    layers = read_4bit_layers(out / "adapter")
    assert all(spec["quant_type"] == "nf4" and spec["double_quant"] and spec["blocksize"] == 64
               for spec in layers.values()), layers
    base4 = load_4bit(adapter_base(out))
    four_bit = {name for name, m in base4.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert set(layers) == four_bit and len(four_bit) == 2 * 7  # q, k, v, o, gate, up, down; not lm_head
    base16 = AutoModelForCausalLM.from_pretrained(adapter_base(out), dtype=torch.float32)
    assert to_4bit_as_trained(base16, layers) == len(layers)
    for name in layers:
        weight = base4.get_submodule(name).weight
        assert torch.equal(base16.get_submodule(name).weight,
                           bnb.functional.dequantize_4bit(weight.data, weight.quant_state).float()), name


def test_merged16_is_the_adapter_on_the_4bit_layers_as_trained(exported):
    out, result, printed = exported
    assert f"merging {out / 'adapter'} into {adapter_base(out)}, onto its 14 4-bit layers as the run trained" in printed
    assert "merged16 keeps the fine-tune: held-out loss" in printed
    assert json.loads((result["merged16"] / "export_source.json").read_text())["merged_onto"] == (
        "4-bit layers as trained")
    ids = torch.load(out / "probe_ids.pt")
    merged = probe_logits(result["merged16"], ids)
    qlora = torch.load(out / "probe_logits.pt")  # the 4-bit base + adapter, as trained
    with torch.no_grad():
        quantization = (probe_logits(adapter_base(out), ids) - load_4bit(adapter_base(out))(input_ids=ids).logits)
    to_qlora, nf4 = (merged - qlora).abs().max().item(), quantization.abs().max().item()
    print(f"\nlogits, max |difference| on the probe: merged16 vs 4-bit + adapter {to_qlora:.5f} (float16 storage); "
          f"16-bit vs 4-bit base {nf4:.4f}")
    assert to_qlora < 5e-3 < nf4  # what trained, but for the float16 storage; the nf4 rounding is not added back


def test_merge_onto_original_is_the_adapter_on_the_16bit_weights(exported, tmp_path):
    """--merge-onto original: the merge every 4-bit export made before, said so, and never reused for the default."""
    import contextlib
    import io

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from common.errors import UserError
    from common.export import export_run

    out, _, _ = exported
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = export_run(out, "merged16", out_dir=tmp_path, merge_onto="original")
    assert "warning: a 4-bit run merged onto the 16-bit weights" in printed.getvalue()
    ids = torch.load(out / "probe_ids.pt")
    with torch.no_grad():
        base16 = AutoModelForCausalLM.from_pretrained(adapter_base(out), dtype=torch.float32).eval()
        unmerged = PeftModel.from_pretrained(base16, out / "adapter").eval()(input_ids=ids).logits
    assert (probe_logits(result["merged16"], ids) - unmerged).abs().max() < 5e-3
    with pytest.raises(UserError, match="merged onto the base's 16-bit weights, not its 4-bit layers as trained"):
        export_run(out, "gguf", ["f16"], out_dir=tmp_path)


def test_the_gguf_of_a_qlora_run_passes_the_parity_check(exported):
    out, result, printed = exported
    assert all((out / "export" / "gguf" / f"run-{quant}.gguf").is_file() for quant in ("f16", "q8_0"))
    rows = {m.group(1): [int(n) for n in m.groups()[1:]] for m in PARITY.finditer(printed)}
    assert sorted(rows) == ["f16", "q8_0"], printed
    ids_ok, prompts, agree, total, ties, disagree, identical, _, identical_to_tie = rows["f16"]
    assert ids_ok == prompts > 0 and disagree == 0 and identical + identical_to_tie == prompts, rows["f16"]
    assert rows["q8_0"][2] / rows["q8_0"][3] > 0.5


def test_a_4bit_merge_is_answered_in_one_line(qlora_run):
    out, _ = qlora_run
    result = run(["scripts/export.py", out, "--to", "merged4bit"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "merged16" in lines[0] and "q4_k_m" in lines[0], result.stderr


def test_the_switch_reads_as_a_switch(capsys):
    from common.config import parse_config

    g = {}
    exec(compile("from dataclasses import dataclass\nfrom common.config import AutoSwitch\n@dataclass\nclass C:\n"
                 "    load_in_4bit: AutoSwitch = None\n", "<config>", "exec"), g)
    cases = {(): None, ("--load-in-4bit",): True, ("--no-load-in-4bit",): False, ("--load-in-4bit", "false"): False,
             ("--load-in-4bit", "True"): True, ("--load-in-4bit", "auto"): None, ("--no_load_in_4bit",): False}
    for argv, expected in cases.items():
        assert parse_config(g["C"], list(argv)).load_in_4bit is expected, argv
    with pytest.raises(SystemExit) as stop:
        parse_config(g["C"], ["--load-in-4bit", "maybe"])
    error = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(error.splitlines()) == 1 and "true, false or auto" in error

"""bitsandbytes' 4-bit layers: one setting on a CPU that training, evaluation and a reload all need, and the record of
which layers a run trained in 4-bit, so that its export merges onto the weights the adapter was trained against."""
import json
from pathlib import Path

import torch

from common.errors import UserError


def unpacked_cpu_4bit(model):
    """Keep bitsandbytes' 4-bit layers in their trainable layout on a CPU. On a CPU with AVX512-BF16, bitsandbytes
    0.50 repacks a Linear4bit's weight in place at its first forward in eval mode without gradients (the preflight's,
    the evaluation's) for a faster inference kernel, and then (1) a training forward through it fails ("a view of a
    leaf Variable that requires grad is being used in an in-place operation"), (2) its outputs move by up to about 1e-2
    (block scales rounded to bf16), and (3) a layer whose in_features is not a multiple of 64 cannot be repacked at all
    (the tiny Mllama's 32-wide vision encoder: "shape '[32, 0]' is invalid"). Turning the repacking off keeps one
    layout for training, evaluation and a reload. Load the 4-bit base the same way to compare logits with the run."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
    return model


# --------------------------------------------------------------------------- which weights a 4-bit run trained on
# A QLoRA adapter is trained against dequant(nf4(W)), not W. Merging it into W adds W - dequant(nf4(W)) to every
# layer, which on a real model (SmolLM2-135M-Instruct) undid a third of what training taught. So a 4-bit run records
# which base layers were 4-bit and how they were quantized, and the export merges onto those layers quantized and
# dequantized again the same way: bitsandbytes' quantization is deterministic, so that is what the run trained on.
QUANTIZED_LAYERS = "quantized_layers.json"  # in RUN_DIR/adapter/


def record_4bit_layers(model, adapter_dir) -> Path | None:
    """adapter/quantized_layers.json: every bitsandbytes Linear4bit of the base (its name in the plain base model) and
    how its weight was quantized. None, and nothing written, for a model without 4-bit layers."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return None
    layers = {}
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit) and module.weight.quant_state is not None:
            state = module.weight.quant_state
            plain = name.replace(".base_layer", "").removeprefix("base_model.model.")  # PEFT's wrapping undone
            layers[plain] = {"quant_type": state.quant_type, "blocksize": state.blocksize,
                             "double_quant": bool(state.nested), "dtype": str(state.dtype).removeprefix("torch."),
                             "quant_storage": str(module.weight.quant_storage).removeprefix("torch.")}
    if not layers:
        return None
    path = Path(adapter_dir) / QUANTIZED_LAYERS
    path.write_text(json.dumps({"layers": layers}, indent=1) + "\n", encoding="utf-8")
    return path


def read_4bit_layers(adapter_dir) -> dict | None:
    """{layer name: how it was quantized} from adapter/quantized_layers.json; None for a run trained in 16-bit."""
    path = Path(adapter_dir) / QUANTIZED_LAYERS
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))["layers"]
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: not the record of the 4-bit layers the run wrote ({err}); copy it from "
                        "a checkpoint of the run, or pass --merge-onto original") from None


@torch.no_grad()
def to_4bit_as_trained(model, layers: dict) -> int:
    """Replace each named layer's weight, in place, by what the 4-bit run multiplied by: the weight in the dtype it
    was quantized from, quantized and dequantized by bitsandbytes with the recorded settings. Returns the count."""
    import bitsandbytes as bnb

    for name, spec in layers.items():
        try:
            weight = model.get_submodule(name).weight
        except AttributeError:
            raise UserError(f"{QUANTIZED_LAYERS} names a layer {name} that this base model does not have: the run "
                            "trained on another model; pass that one with --base, or --merge-onto original") from None
        source = weight.data.to(getattr(torch, spec["dtype"]))
        packed, state = bnb.functional.quantize_4bit(
            source, blocksize=spec["blocksize"], compress_statistics=spec["double_quant"],
            quant_type=spec["quant_type"], quant_storage=getattr(torch, spec["quant_storage"]))
        weight.data.copy_(bnb.functional.dequantize_4bit(packed, state).to(weight.dtype))
    return len(layers)

"""LoRA options shared by every recipe: which layers, which variant, and what each variant needs.

Variants: plain LoRA, rsLoRA (scale alpha/sqrt(r)), DoRA (magnitude + direction),
init gaussian | pissa (principal singular vectors) | loftq (quantisation-aware), and AdaLoRA (rank budget
reallocated during training). Unsloth's get_peft_model does all but AdaLoRA; it refuses PiSSA and LoftQ
on a 4-bit model, so those load the model in 16-bit. Every combination is checked here before a model loads.
"""
import math
from typing import Literal

import torch

from common.errors import UserError
from common.tokenizer import save_tokenizer

Init = Literal["default", "gaussian", "pissa", "loftq"]
Bias = Literal["none", "all", "lora_only"]

PRESETS = {
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mlp": ["gate_proj", "up_proj", "down_proj"],
    "all-linear": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
FULLY_TRAINED = ("embed_tokens", "lm_head")  # trained whole (modules_to_save), not through LoRA
INITS = {"default": True, "gaussian": "gaussian", "pissa": "pissa", "loftq": "loftq"}
NEEDS_16BIT = ("pissa", "loftq")


def resolve_targets(targets: str, available: list[str]) -> list[str]:
    """`targets` is a preset (attention, mlp, all-linear) or a list like "q_proj,v_proj,embed_tokens"."""
    if targets in PRESETS:
        chosen = [name for name in PRESETS[targets] if name in available]
        if not chosen:
            raise UserError(f"--targets {targets}: matches no layer of this model; its linear layers are: "
                            f"{', '.join(available)}")
        return chosen
    chosen = [name.strip() for name in targets.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in available and name not in FULLY_TRAINED]
    if unknown or not chosen:
        raise UserError(f"--targets: this model has no layer named {', '.join(unknown) or '(none given)'}; use a "
                        f"preset ({', '.join(PRESETS)}) or names from: {', '.join(available + list(FULLY_TRAINED))}")
    return chosen


def check_lora_options(*, r: int, lora_alpha: float, lora_dropout: float, init: str = "default",
                       load_in_4bit: bool | None = None, use_dora: bool = False, use_rslora: bool = False,
                       adalora: bool = False, init_r: int = 12, target_r: int = 8, deltaT: int = 1) -> None:
    """Refuse a combination that cannot work, with why and what to use instead. Runs before any model loads."""
    if r <= 0:
        raise UserError(f"--r {r}: the LoRA rank must be a positive integer (8, 16, 32 and 64 are common)")
    if not (lora_alpha > 0 and math.isfinite(lora_alpha)):
        raise UserError(f"--lora-alpha {lora_alpha}: must be positive (often r or 2 * r)")
    if not 0 <= lora_dropout < 1:
        raise UserError(f"--lora-dropout {lora_dropout}: must be in [0, 1)")
    if init in NEEDS_16BIT and load_in_4bit:
        raise UserError(f"--init {init} needs 16-bit base weights (it rewrites them from their SVD), and Unsloth "
                        "refuses it on a 4-bit model: leave --load-in-4bit unset and the recipe loads in 16-bit, "
                        "or use --init default or gaussian with 4-bit")
    if not adalora:
        return
    for on, flag, clash in ((use_dora, "--use-dora", "DoRA"), (use_rslora, "--use-rslora", "rsLoRA scaling")):
        if on:
            raise UserError(f"--adalora with {flag}: PEFT's AdaLoRA has no {clash}; drop {flag}, or drop --adalora")
    if init != "default":
        raise UserError(f"--adalora with --init {init}: AdaLoRA starts from its own SVD form (P, zero Λ, Q); "
                        "drop --init")
    if init_r <= 0 or target_r <= 0 or target_r > init_r:
        raise UserError(f"--adalora: need 0 < --target-r ({target_r}) <= --init-r ({init_r}): AdaLoRA starts "
                        "every layer at init_r and prunes to an average of target_r")
    if deltaT <= 0:
        raise UserError(f"--deltaT {deltaT}: must be a positive number of steps between reallocations")


def check_adalora_schedule(tinit: int, tfinal: int, planned_steps: int) -> None:
    """AdaLoRA's schedule has to fit the run: known once the data is read, still before the model loads."""
    if tinit + tfinal >= planned_steps:
        raise UserError(f"--adalora: --tinit {tinit} + --tfinal {tfinal} must be below the {planned_steps} "
                        "planned optimizer steps, or no step is left to reallocate ranks; lower them or train longer")


def planned_steps(n_examples: int, batch_size: int, grad_accum: int, epochs: float, max_steps: int) -> int:
    """Optimizer steps the trainer will run (AdaLoRA's schedule needs this number up front)."""
    if max_steps > 0:
        return max_steps
    return max(1, math.ceil(epochs * math.ceil(n_examples / batch_size) / grad_accum))


def memory_note(n_params: int) -> str:
    """What loading in 16-bit instead of 4-bit costs, for the message that says we do it."""
    gib16, gib4 = n_params * 2 / 2**30, n_params * 0.55 / 2**30  # nf4 + double quant: ~0.55 bytes/parameter
    return (f"the weights take about {gib16:.1f} GiB in 16-bit instead of {gib4:.1f} GiB in 4-bit "
            f"(+{gib16 - gib4:.1f} GiB of GPU memory)")


def loftq_without_gpu():
    """PEFT's LoftQ init (peft/utils/loftq_utils.py) computes on CUDA only. On a machine without a GPU,
    run the same steps on the CPU: nf4-quantise the residual with bitsandbytes, then an SVD of what is left."""
    import bitsandbytes as bnb
    import peft.tuners.lora.layer as lora_layer
    from peft.utils.loftq_utils import _low_rank_decomposition

    @torch.no_grad()
    def loftq_init(weight, num_bits: int, reduced_rank: int, num_iter: int = 1):
        if num_bits != 4:
            raise UserError("LoftQ on the CPU supports 4-bit only")
        original, dtype = weight.float(), weight.dtype
        residual = original.clone()
        for i in range(num_iter):
            quantized, state = bnb.functional.quantize_4bit(residual, quant_type="nf4", compress_statistics=False)
            dequantized = bnb.functional.dequantize_4bit(quantized, state)
            low_rank = _low_rank_decomposition(original - dequantized, reduced_rank=reduced_rank)
            if i + 1 < num_iter:
                residual = original - low_rank["L"] @ low_rank["R"]
        return dequantized.to(dtype), low_rank["R"], low_rank["L"]

    lora_layer.loftq_init = loftq_init


def save_adapter(model, tokenizer, adapter_dir, init: str, run_dir, weights: bool = True) -> None:
    """Save the adapter so that it reloads onto the original base model with the same logits.

    PiSSA moves the principal part of W into the adapter, so the trained adapter is converted back to a plain
    LoRA (rank 2r) against the original W, using the starting adapter saved before training. LoftQ replaces W
    by its 4-bit approximation; PEFT's documented way is to save that base next to the adapter (loftq_base/).
    """
    if init == "pissa":
        model.save_pretrained(adapter_dir, path_initial_model_for_weight_conversion=str(run_dir / "pissa_init"))
        print("PiSSA: saved as a plain LoRA of rank 2r that applies to the original base model")
    elif init == "loftq":
        base_dir = run_dir / "loftq_base"
        base = model.get_base_model()
        # The base weights as a plain model has them: drop the LoRA tensors, unwrap "base_layer".
        weights = {name.replace(".base_layer.", "."): tensor for name, tensor in base.state_dict().items()
                   if "lora_" not in name}
        base.save_pretrained(base_dir, state_dict=weights)
        save_tokenizer(tokenizer, base_dir)
        config = model.peft_config["default"]
        config.base_model_name_or_path = str(base_dir)
        config.init_lora_weights, config.loftq_config = True, {}  # trained weights: nothing to initialise on load
        model.save_pretrained(adapter_dir)
        print(f"LoftQ: saved the base weights it starts from to {base_dir}; the adapter points at them")
    elif weights:  # (under FSDP the Trainer has saved them: they are gathered from every process)
        model.save_pretrained(adapter_dir)  # LoRA weights and adapter_config.json only, not the base model
    save_tokenizer(tokenizer, adapter_dir)  # so that AutoTokenizer loads it back as it was


def save_pissa_start(model, run_dir) -> None:
    """PiSSA: keep the starting adapter, which save_adapter needs to convert the result to a plain LoRA."""
    config = model.peft_config["default"]
    config.init_lora_weights = True  # saved as a plain LoRA start, as PEFT's conversion expects
    model.save_pretrained(run_dir / "pissa_init")
    config.init_lora_weights = "pissa"

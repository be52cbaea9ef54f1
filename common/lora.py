"""LoRA options shared by every recipe: which layers, which variant, and what each variant needs.

Variants: plain LoRA, rsLoRA (scale alpha/sqrt(r)), DoRA (magnitude + direction),
init gaussian | pissa (principal singular vectors) | loftq (quantisation-aware), and AdaLoRA (rank budget
reallocated during training). Unsloth's get_peft_model does all but AdaLoRA; it refuses PiSSA and LoftQ
on a 4-bit model. PiSSA stays 16-bit by design: it moves the principal part of each weight into the adapter and
rewrites what is left, and a 4-bit base would round that residual away. LoftQ loads in 16-bit unless 4-bit is asked
for; then it is PEFT's QLoRA form (loftq_on_4bit). Every combination is checked here before a model loads.
"""
import json
import math

import torch
from transformers import TrainerCallback

from common.errors import UserError
from common.four_bit import record_4bit_layers
from common.tokenizer import save_tokenizer

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
    if init == "pissa" and load_in_4bit:
        raise UserError("--init pissa with --load-in-4bit: PiSSA stays 16-bit by design (it moves each weight's "
                        "principal part into the adapter and rewrites the rest, which 4 bits would round away); "
                        "drop --load-in-4bit (16-bit), or use --init loftq, default or gaussian with 4-bit")
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


def loftq_on_4bit(model, model_name: str) -> None:
    """LoftQ on a model loaded in 4-bit: PEFT's QLoRA form (peft.replace_lora_weights_loftq). Each LoRA pair is set
    to the rank-r SVD of W - dequant(nf4(W)), with W read from the 16-bit safetensors, so that the 4-bit base plus
    the adapter starts closer to W. Without a GPU PEFT's step runs on CUDA only, so the same step runs on the CPU."""
    from pathlib import Path

    from huggingface_hub import snapshot_download
    from peft.utils import loftq_utils
    from transformers import AutoConfig

    if not torch.cuda.is_available():
        @torch.no_grad()
        def loftq_init_on_cpu(qweight, weight, num_bits: int, reduced_rank: int):
            import bitsandbytes as bnb
            dequantized = bnb.functional.dequantize_4bit(qweight.data, qweight.quant_state).float()
            low_rank = loftq_utils._low_rank_decomposition(weight.float() - dequantized, reduced_rank=reduced_rank)
            return low_rank["R"], low_rank["L"]
        loftq_utils._loftq_init_new = loftq_init_on_cpu
    # The model as named (Unsloth may have loaded its NAME-bnb-4bit copy): LoftQ needs the 16-bit weights.
    weights_dir = model_name if Path(model_name).is_dir() else snapshot_download(
        model_name, allow_patterns=["*.safetensors", "*.safetensors.index.json", "config.json"])
    if getattr(AutoConfig.from_pretrained(weights_dir), "quantization_config", None):
        raise UserError(f"--init loftq: {weights_dir} holds quantized weights; LoftQ needs the 16-bit ones it starts "
                        "from: pass the 16-bit model with --model")
    loftq_utils.replace_lora_weights_loftq(model, model_path=str(weights_dir))


def dequantized_state_dict(model) -> dict:
    """The base model's weights as a plain 16-bit model has them: LoRA tensors dropped, "base_layer" unwrapped,
    bitsandbytes' quantization state (weight.absmax, weight.quant_map, ...) dropped and each 4-bit weight dequantized
    (what the layer really multiplies by)."""
    import bitsandbytes as bnb

    weights = {name.replace(".base_layer.", "."): tensor for name, tensor in model.state_dict().items()
               if "lora_" not in name and ".weight." not in name}
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            weights[f"{name}.weight".replace(".base_layer.", ".")] = bnb.functional.dequantize_4bit(
                module.weight.data, module.weight.quant_state)
    return weights


def save_plain_model(config, weights: dict, directory) -> None:
    """config.json (without its quantization_config) and model.safetensors: a plain model transformers loads."""
    import copy
    from pathlib import Path

    from safetensors.torch import save_file

    config = copy.deepcopy(config)
    del config.quantization_config
    if getattr(config, "tie_word_embeddings", False):  # one tensor on disk, as save_pretrained writes it
        weights = {name: tensor for name, tensor in weights.items() if name != "lm_head.weight"}
    Path(directory).mkdir(parents=True, exist_ok=True)
    config.save_pretrained(directory)
    save_file({name: tensor.contiguous() for name, tensor in weights.items()}, Path(directory) / "model.safetensors",
              metadata={"format": "pt"})


def save_adapter(model, tokenizer, adapter_dir, init: str, run_dir, weights: bool = True) -> None:
    """Save the adapter so that it reloads onto the original base model with the same logits, and, for a model
    loaded in 4-bit, adapter/quantized_layers.json: which layers were 4-bit (the export merges onto them as trained).

    PiSSA moves the principal part of W into the adapter, so the trained adapter is converted back to a plain
    LoRA (rank 2r) against the original W, using the starting adapter saved before training. LoftQ's adapter
    belongs to W's 4-bit approximation, not to W; PEFT's documented way is to save that base next to the adapter
    (loftq_base/), dequantized to 16-bit: the base that merged16 merges into.
    """
    if init == "pissa":
        model.save_pretrained(adapter_dir, path_initial_model_for_weight_conversion=str(run_dir / "pissa_init"))
        print("PiSSA: saved as a plain LoRA of rank 2r that applies to the original base model")
    elif init == "loftq":
        base_dir = run_dir / "loftq_base"
        base = model.get_base_model()
        weights = dequantized_state_dict(base)
        if getattr(base.config, "quantization_config", None):
            save_plain_model(base.config, weights, base_dir)  # transformers would write the 4-bit packed state
        else:
            base.save_pretrained(base_dir, state_dict=weights)
        save_tokenizer(tokenizer, base_dir)
        config = model.peft_config["default"]
        config.base_model_name_or_path = str(base_dir)
        config.init_lora_weights, config.loftq_config = True, {}  # trained weights: nothing to initialise on load
        model.save_pretrained(adapter_dir)
        print(f"LoftQ: saved the base weights it starts from to {base_dir}; the adapter points at them")
    elif weights:  # (under FSDP the Trainer has saved them: they are gathered from every process)
        model.save_pretrained(adapter_dir)  # LoRA weights and adapter_config.json only, not the base model
    if init != "loftq":  # 4-bit layers: the export merges onto them as trained (LoftQ's loftq_base/ already is that)
        record_4bit_layers(model, adapter_dir)
    save_tokenizer(tokenizer, adapter_dir)  # so that AutoTokenizer loads it back as it was


def save_pissa_start(model, run_dir) -> None:
    """PiSSA: keep the starting adapter, which save_adapter needs to convert the result to a plain LoRA."""
    config = model.peft_config["default"]
    config.init_lora_weights = True  # saved as a plain LoRA start, as PEFT's conversion expects
    model.save_pretrained(run_dir / "pissa_init")
    config.init_lora_weights = "pissa"


# --------------------------------------------------------------------------- AdaLoRA
# AdaLoRA: PEFT's AdaLoraConfig, with the rank budget reallocated after every optimizer step.
#
# Unsloth has no AdaLoRA, so the recipe attaches it with PEFT directly. AdaLoRA scores each singular value
# from its gradient and prunes the least important ones until the layers average target_r. Its schedule:
# tinit warm-up steps at init_r, then reallocation every deltaT steps, then tfinal steps with ranks fixed.

def adalora_config(*, targets: list[str], total_steps: int, lora_alpha: float, lora_dropout: float, bias: str,
                   init_r: int, target_r: int, tinit: int, tfinal: int, deltaT: int, beta1: float, beta2: float,
                   orth_reg_weight: float):
    from peft import AdaLoraConfig

    return AdaLoraConfig(
        task_type="CAUSAL_LM", target_modules=targets, lora_alpha=lora_alpha, lora_dropout=lora_dropout, bias=bias,
        init_r=init_r, target_r=target_r, tinit=tinit, tfinal=tfinal, deltaT=deltaT, beta1=beta1, beta2=beta2,
        orth_reg_weight=orth_reg_weight, total_step=total_steps)


class AdaLoraBudget(TrainerCallback):
    """Calls update_and_allocate at the one moment it needs: after optimizer.step(), before the gradients are
    zeroed (the importance scores are computed from them). Trainer's on_optimizer_step is that moment. The model
    comes with each call rather than being kept here, so that `del trainer, model` really frees it."""

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        model.base_model.update_and_allocate(state.global_step)


def adalora_ranks(model) -> dict[str, int]:
    """The rank each adapted layer ends with: its singular values that were not pruned."""
    from peft.tuners.adalora import AdaLoraLayer

    ranks = {}
    for name, module in model.named_modules():
        if isinstance(module, AdaLoraLayer) and "default" in module.lora_E:
            ranks[name.removeprefix("base_model.model.")] = int((module.lora_E["default"] != 0).sum())
    return ranks


def report_adalora_ranks(model, init_r: int, path) -> dict[str, int]:
    """Print the final rank of every adapted layer (watch how the budget was used) and save them as JSON."""
    ranks = adalora_ranks(model)
    for name, rank in ranks.items():
        print(f"  {name:45s} rank {rank:2d} of {init_r}  {'#' * rank}")
    total = sum(ranks.values())
    print(f"  {len(ranks)} layers, {total} ranks in all, {total / max(len(ranks), 1):.2f} on average")
    path.write_text(json.dumps(ranks, indent=1) + "\n")
    return ranks

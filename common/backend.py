"""Which library loads and adapts the vision model: the one place that chooses, and says which.

  GPU   Unsloth's FastVisionModel: 4-bit loading, its LoRA and its gradient checkpointing.
  CPU   transformers + PEFT. FastVisionModel raises without a GPU (Unsloth's CPU backend has no vision
        models), so the model loads with AutoModelForImageTextToText and gets the same LoRA: the layers are
        chosen by Unsloth's own regex for the four switches (unsloth_zoo.peft_utils.get_peft_regex, what
        FastVisionModel.get_peft_model uses). TRL's SFTTrainer computes its loss with a fused LM head whose
        kernel is Triton (GPU only); Unsloth's CPU backend reroutes it to a chunked torch version
        (unsloth_zoo.cpu.ops.patch_trl_fused_lm_head). `import unsloth` applies that patch on a CPU already;
        it is applied here again so training does not depend on an import side effect.
"""
import torch

from common.errors import UserError

UNSLOTH, TRANSFORMERS = "unsloth FastVisionModel", "transformers + PEFT"


def vision_backend() -> str:
    backend = UNSLOTH if torch.cuda.is_available() else TRANSFORMERS
    why = "a GPU is available" if backend == UNSLOTH else "no GPU: FastVisionModel needs CUDA"
    print(f"backend: {backend} ({why})")
    return backend


def load_vision_model(backend: str, model_name: str, dtype, load_in_4bit: bool):
    """(model, processor) from a hub id or local path."""
    if backend == UNSLOTH:
        from unsloth import FastVisionModel
        return FastVisionModel.from_pretrained(model_name, dtype=dtype, load_in_4bit=load_in_4bit,
                                               use_gradient_checkpointing="unsloth")
    import unsloth  # noqa: F401  unsloth_zoo refuses to be imported before it
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from unsloth_zoo.cpu.ops import patch_trl_fused_lm_head

    if load_in_4bit:
        raise UserError("4-bit loading needs a GPU (bitsandbytes' 4-bit kernels); on a CPU pass --load-in-4bit false "
                        "(an 11B model then needs about 44 GB of memory in float32) or use --model tiny")
    patch_trl_fused_lm_head()
    model = AutoModelForImageTextToText.from_pretrained(model_name, dtype=dtype)
    return model, AutoProcessor.from_pretrained(model_name)


def add_vision_lora(backend: str, model, cfg):
    """LoRA on the layers the four switches select, with the recipe's rank, alpha, dropout and bias."""
    names = ("finetune_vision_layers", "finetune_language_layers", "finetune_attention_modules", "finetune_mlp_modules")
    switches = {name: getattr(cfg, name) for name in names}
    for first, second in (names[:2], names[2:]):  # Unsloth raises a RuntimeError here; say which flags instead
        if not (switches[first] or switches[second]):
            raise UserError(f"--{first.replace('_', '-')} and --{second.replace('_', '-')} are both off: nothing to "
                            "train; turn one on")
    lora = dict(r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias=cfg.bias,
                use_rslora=cfg.use_rslora)
    if backend == UNSLOTH:
        from unsloth import FastVisionModel
        return FastVisionModel.get_peft_model(model, **switches, **lora, random_state=cfg.seed,
                                              use_gradient_checkpointing="unsloth")
    import peft
    import unsloth  # noqa: F401  unsloth_zoo refuses to be imported before it
    from unsloth_zoo.peft_utils import get_peft_regex

    torch.manual_seed(cfg.seed)  # as FastVisionModel's random_state: the same LoRA A matrices for a seed
    config = peft.LoraConfig(**lora, target_modules=get_peft_regex(model, **switches), task_type="CAUSAL_LM")
    return peft.get_peft_model(model, config)


def for_training(backend: str, model):
    if backend == UNSLOTH:
        from unsloth import FastVisionModel
        FastVisionModel.for_training(model)
    else:
        model.train()


def for_inference(backend: str, model):
    if backend == UNSLOTH:
        from unsloth import FastVisionModel
        FastVisionModel.for_inference(model)
    else:
        model.eval()

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


def add_vision_lora(backend: str, model, *, r: int, lora_alpha: float, lora_dropout: float, bias: str,
                    use_rslora: bool, seed: int, finetune_vision_layers: bool, finetune_language_layers: bool,
                    finetune_attention_modules: bool, finetune_mlp_modules: bool):
    """LoRA on the layers the four switches select, with the recipe's rank, alpha, dropout and bias."""
    switches = dict(finetune_vision_layers=finetune_vision_layers, finetune_language_layers=finetune_language_layers,
                    finetune_attention_modules=finetune_attention_modules, finetune_mlp_modules=finetune_mlp_modules)
    lora = dict(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, bias=bias, use_rslora=use_rslora)
    if backend == UNSLOTH:
        from unsloth import FastVisionModel
        return FastVisionModel.get_peft_model(model, **switches, **lora, random_state=seed,
                                              use_gradient_checkpointing="unsloth")
    import peft
    import unsloth  # noqa: F401  unsloth_zoo refuses to be imported before it
    from unsloth_zoo.peft_utils import get_peft_regex

    torch.manual_seed(seed)  # as FastVisionModel's random_state: the same LoRA A matrices for a seed
    config = peft.LoraConfig(**lora, target_modules=get_peft_regex(model, **switches), task_type="CAUSAL_LM")
    return peft.get_peft_model(model, config)


def check_vision_switches(*, finetune_vision_layers: bool, finetune_language_layers: bool,
                          finetune_attention_modules: bool, finetune_mlp_modules: bool) -> None:
    """Unsloth raises a RuntimeError after the model has loaded when a pair is off; say which flags, before."""
    pairs = ((("vision-layers", finetune_vision_layers), ("language-layers", finetune_language_layers)),
             (("attention-modules", finetune_attention_modules), ("mlp-modules", finetune_mlp_modules)))
    for (first, a), (second, b) in pairs:
        if not (a or b):
            raise UserError(f"--no-finetune-{first} and --no-finetune-{second}: nothing to train; turn one on")


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

"""Which library loads and adapts the vision model: the one place that chooses, and says which.

  GPU   Unsloth's FastVisionModel: 4-bit loading, its LoRA and its gradient checkpointing.
  CPU   transformers + PEFT. FastVisionModel raises without a GPU (Unsloth's CPU backend has no vision
        models), so the model loads with AutoModelForImageTextToText and gets the same LoRA: the layers are
        chosen by Unsloth's own regex for the four switches (unsloth_zoo.peft_utils.get_peft_regex, what
        FastVisionModel.get_peft_model uses). TRL's SFTTrainer computes its loss with a fused LM head whose
        kernel is Triton (GPU only); Unsloth's CPU backend reroutes it to a chunked torch version
        (unsloth_zoo.cpu.ops.patch_trl_fused_lm_head). `import unsloth` applies that patch on a CPU already;
        it is applied here again so training does not depend on an import side effect.
        --load-in-4bit: nf4 through bitsandbytes, whose CPU backend quantizes, trains LoRA on and saves 4-bit layers.
"""
import torch

from common.errors import UserError
from common.four_bit import unpacked_cpu_4bit

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

    patch_trl_fused_lm_head()
    quantization = None
    if load_in_4bit:  # QLoRA's settings, as Unsloth's 4-bit checkpoints: nf4, double quantisation
        from transformers import BitsAndBytesConfig
        # Every linear layer is quantized but lm_head (transformers' default), the vision encoder and the
        # multi_modal_projector included: neither bitsandbytes nor transformers needs them left out (the tiny
        # Mllama trains, saves and reloads so, tests/test_vision.py), and LoRA trains on Linear4bit in both towers.
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                          bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
    model = AutoModelForImageTextToText.from_pretrained(model_name, dtype=dtype, quantization_config=quantization)
    if load_in_4bit:
        from peft import prepare_model_for_kbit_training
        unpacked_cpu_4bit(model)  # common/four_bit.py: why
        # PEFT's k-bit preparation freezes the base and casts the unquantized 16-bit weights (norms, embeddings,
        # lm_head) to float32 for a stable loss. On a CPU they load in float32 already, so nothing is cast and memory
        # is unchanged. Its gradient checkpointing is left off here: the trainer turns it on (SFTConfig's default,
        # non-reentrant in transformers 5, so no input-gradient hook is needed), as it does in 32-bit.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model, AutoProcessor.from_pretrained(model_name)


def float32_adapter(model):
    """TRL's SFTTrainer casts the LoRA weights of any 4-bit model to bf16 (QLoRA's recipe, where the compute dtype is
    bf16). On the CPU path the compute dtype is float32, and the cast only adds rounding: every LoRA input is rounded
    to bf16, Adam updates bf16 weights with no float32 master copy, and the bf16 adapter reloads in float32 (PEFT's
    default), so the reload's logits differ from training's (by about 1e-3 on the tiny Mllama). Call it after the
    trainer is built and before training: the optimizer is created at train() and sees the float32 weights."""
    for param in model.parameters():
        if param.requires_grad and param.dtype == torch.bfloat16:
            param.data = param.data.float()


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

"""Predict a LoRA run's peak GPU memory from the model's config alone, and say whether it fits a GPU.

    plan = plan_memory("unsloth/Meta-Llama-3.1-8B-Instruct", gpu="t4", seq=2048, r=16, batch=2)
    print(plan.summary())      # the parts, the verdict, the longest sequence that fits, what to change
    plan.fits                  # bool

Predicted peak (what torch.cuda.max_memory_reserved reports) =
  weights      4-bit: NF4_BYTES per parameter of the quantised linear layers (nf4 + double quantisation with its
               block statistics and quant state), 2 bytes for everything else (embeddings, lm_head, norms);
               16-bit: 2 bytes per parameter. Unsloth's dynamic 4-bit vision checkpoints ("unsloth-bnb-4bit") keep
               some layers in 16-bit: about 10% more than plain nf4, as Unsloth's own blog states.
  LoRA         r * (in + out) per targeted linear layer, fp32 weight + fp32 gradient (8 bytes), plus Adam:
               8-bit Adam 2 bytes, 32-bit Adam 8 bytes per trainable parameter.
  activations  tokens in the batch (batch * seq) times bytes per token. Unsloth's gradient checkpointing sends each
               layer's checkpointed hidden state to CPU memory, so what stays on the GPU peaks when the loss is taken:
               the batch's 16-bit logits (vocab * 2 bytes a token) plus a few hidden-state buffers; the other
               candidate peak, one layer's recompute and its gradients in backward, is smaller for these models.
               Plain transformers + PEFT ("hf") keeps every layer's checkpoint on the GPU (layers * hidden * 2 bytes)
               and upcasts the logits to fp32 for the loss (about vocab * 8 bytes a token).
  overhead     allocator slack: a fixed OVERHEAD_GIB.
The CUDA context (CONTEXT_GIB) is outside torch's reserved memory; it is added when checking the fit.

Calibrated against, and only against, these measurements (no GPU was available when this was written):
  8B (Llama-3.1 shape), 4-bit, r=32 all linear, batch 2 x 2048, Unsloth: 7.25 GiB; HF+PEFT: 12.02 GiB
  8B, mixed lengths 128-2048, batch 8: Unsloth padded 10.73 GiB, HF+PEFT padded 28.26 GiB
  11B Llama-3.2-Vision, 560-pixel images, batch 2, r=16, Unsloth: 9.55 GiB
tests/test_benchmark.py checks the predictions stay within 15% of them; scripts/benchmark.py prints the
prediction beside each measured peak, so new GPU measurements check it further.
"""
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import UserError
from common.hub import is_a_path

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "benchmarks" / "configs"
GIB = 2**30

NF4_BYTES = 0.55  # bytes per parameter of a 4-bit linear layer: 0.5 + block absmax + quant state, and rounding
DYNAMIC_4BIT_EXTRA = 0.10  # Unsloth dynamic 4-bit (vision models): some layers left in 16-bit, "<10% more VRAM"
ADAM_BYTES = {"8bit": 2, "32bit": 8}
LORA_BYTES = 8  # fp32 LoRA weight + fp32 gradient
OVERHEAD_GIB = 0.15
CONTEXT_GIB = 0.45  # CUDA context and cuBLAS workspace: used memory that torch does not count as reserved
VISION_TOKENS_PER_TILE = 1608  # Mllama: (560 / 14)^2 patches + 1 class token, padded to a multiple of 8

# Usable memory as torch reports it (total_memory), not the marketing size.
GPUS = {
    "t4": ("Tesla T4 (15 GB, Colab free tier)", 14.74),
    "24gb": ("24 GB card (A10G, RTX 3090/4090, L4)", 22.0),
    "h100": ("H100 80GB", 79.1),
}

# Hub ids whose bundled config is used instead of a download (name fragments, matched case-insensitively).
BUNDLED = {
    "llama-3.2-11b-vision": "llama-3.2-11b-vision",
    "llama-3.1-70b": "llama-3.1-70b",
    "meta-llama-3.1-70b": "llama-3.1-70b",
    "llama-3.1-8b": "llama-3.1-8b",
    "meta-llama-3.1-8b": "llama-3.1-8b",
    "llama-3.2-3b": "llama-3.2-3b",
    "deepseek-llm-7b": "deepseek-llm-7b",
    "deepseek-r1-distill-qwen-1.5b": "deepseek-r1-distill-qwen-1.5b",
}


def bundled_config_path(name: str) -> Path | None:
    """benchmarks/configs/ARCH.json for an arch name or a hub id of one of the bundled architectures; None when the
    name is none of them, or the file is not there (a recipe forked without benchmarks/: the hub's config.json
    serves instead)."""
    lowered = name.lower().rsplit("/", 1)[-1]
    for fragment, arch in BUNDLED.items():
        if lowered == arch or lowered.startswith(fragment):
            path = CONFIG_DIR / f"{arch}.json"
            return path if path.is_file() else None
    return None


def load_config(model: str):
    """A transformers config for `model`: "tiny", a bundled arch name, a config.json, a local model directory,
    a hub id of a bundled architecture (no download), or any other hub id (downloads config.json only)."""
    from transformers import AutoConfig

    if model == "tiny":
        from common.tiny.llama import tiny_model_path
        model = str(tiny_model_path("llama3"))
    path = Path(model)
    if path.is_dir() and not (path / "config.json").exists():
        raise UserError(f"{model}: a directory without config.json; give a model directory, a config.json or a hub id")
    if path.is_file() or path.is_dir():
        try:
            return AutoConfig.from_pretrained(str(path))
        except (OSError, ValueError, KeyError) as err:
            raise UserError(f"{path / 'config.json' if path.is_dir() else path}: cannot be read as a model config "
                            f"({str(err).splitlines()[0][:160]}); is it complete? copy it again") from None
    if is_a_path(model):
        raise UserError(f"{model}: not found (no such directory); give a model directory, a config.json or a hub id")
    bundled = bundled_config_path(model)
    if bundled is not None:
        return AutoConfig.from_pretrained(str(bundled))
    try:
        return AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise UserError(f"{model}: cannot get its config.json ({str(err).splitlines()[0][:160]}); check the hub id "
                        "and the network, or pass a local model directory or config.json (bundled archs: "
                        f"{', '.join(sorted(set(BUNDLED.values())))})") from None


@dataclass
class Shape:
    """What the memory model needs from a config, counted on a meta-device model (no memory, no download)."""
    name: str
    quantisable: int  # parameters of linear layers that 4-bit loading quantises (all but lm_head)
    other: int  # embeddings, lm_head, norms, biases, vision position embeddings: kept in 16-bit
    lora_dims: list[int]  # in + out of every linear layer LoRA targets
    matmul_params: int  # every linear weight, lm_head included: the MFU count
    layers: int
    hidden: int
    vocab: int
    attention_width: int  # heads * head_dim
    max_positions: int
    model_type: str = ""  # config.json's model_type: llama, qwen2, mllama, t5, ...
    architectures: list[str] = field(default_factory=list)  # config.json's architectures: LlamaForCausalLM, ...
    linear_names: list[str] = field(default_factory=list)  # leaf names of the linear layers LoRA can target
    vision: dict | None = None  # {"hidden", "layers", "intermediate"} for a vision tower

    @property
    def params(self) -> int:
        return self.quantisable + self.other


def model_shape_of(model: str) -> Shape:
    """The Shape of `model` (see load_config for what it may be), from its config alone."""
    return model_shape(load_config(model), model)


def model_shape(config, name: str = "") -> Shape:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoModelForSeq2SeqLM

    vision_config = getattr(config, "vision_config", None)
    if vision_config is not None:
        auto = AutoModelForImageTextToText
    elif getattr(config, "is_encoder_decoder", False):
        auto = AutoModelForSeq2SeqLM
    else:
        auto = AutoModelForCausalLM
    try:
        with torch.device("meta"):  # the model's layers without memory: their shapes are all that is needed
            model = auto.from_config(config)
    except (ValueError, KeyError) as err:
        raise UserError(f"{name or config.model_type}: transformers cannot build a {auto.__name__[12:]} from its "
                        f"config ({str(err).splitlines()[0][:120]}); use a chat model's id or directory") from None
    quantisable, lora_dims, matmul, linear_names = 0, [], 0, set()
    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            matmul += module.weight.numel()
            if module_name.rsplit(".", 1)[-1] != "lm_head":
                quantisable += module.weight.numel()
                lora_dims.append(module.in_features + module.out_features)
                linear_names.add(module_name.rsplit(".", 1)[-1])
    total = sum(p.numel() for p in model.parameters())
    text = config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    vision = None
    if vision_config is not None:
        vision = {"hidden": vision_config.hidden_size, "intermediate": vision_config.intermediate_size,
                  "layers": vision_config.num_hidden_layers + getattr(vision_config, "num_global_layers", 0)}
    return Shape(name=name or getattr(config, "_name_or_path", "") or config.model_type, quantisable=quantisable,
                 other=total - quantisable, lora_dims=lora_dims, matmul_params=matmul,
                 layers=text.num_hidden_layers, hidden=text.hidden_size, vocab=text.vocab_size,
                 attention_width=text.num_attention_heads * head_dim,
                 max_positions=getattr(text, "max_position_embeddings", None) or getattr(text, "n_positions", 4096),
                 model_type=config.model_type, architectures=list(getattr(config, "architectures", None) or []),
                 linear_names=sorted(linear_names), vision=vision)


@dataclass
class MemoryPlan:
    model: str
    gpu: str
    gpu_gib: float
    seq: int
    batch: int
    r: int
    load_in_4bit: bool
    method: str
    parts: dict  # GiB per part
    peak_gib: float  # predicted torch reserved peak
    need_gib: float  # peak + CUDA context
    fits: bool
    max_seq: int | None  # longest sequence (multiple of 128) that fits with these settings; None if even 128 does not
    suggestions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    gpus: int = 1  # processes, one GPU each: the plan is per GPU
    fsdp: bool = False  # FSDP shards weights, LoRA and optimizer over the GPUs; DDP keeps a whole copy on each

    def summary(self) -> str:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in self.parts.items())
        per_gpu = f", per GPU of {self.gpus} ({'FSDP' if self.fsdp else 'DDP'})" if self.gpus > 1 else ""
        lines = [f"memory plan: {self.model}, {'4-bit' if self.load_in_4bit else '16-bit'}, r={self.r}, "
                 f"batch {self.batch} x {self.seq} tokens ({self.method}{per_gpu}):",
                 f"  predicted peak {self.peak_gib:.2f} GiB reserved ({parts} GiB) "
                 f"+ {CONTEXT_GIB:.2f} CUDA context = {self.need_gib:.2f} GiB of {self.gpu_gib:.2f} on {self.gpu}"]
        margin = self.gpu_gib - self.need_gib
        if not self.fits:
            lines.append(f"  DOES NOT FIT: {-margin:.2f} GiB over. What fits instead:")
            lines += [f"    - {s}" for s in self.suggestions] or ["    - nothing with these settings: use a bigger GPU"]
        elif margin < 0.15 * self.need_gib:
            lines.append(f"  fits, but tightly ({margin:.2f} GiB spare, inside this estimate's 15% tolerance): "
                         f"the longest sequence that fits is about {self.max_seq}")
        else:
            lines.append(f"  fits ({margin:.2f} GiB spare); the longest sequence that fits is about {self.max_seq}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def predict_peak_gib(shape: Shape, seq: int, batch: int, r: int, load_in_4bit: bool = True, optim: str = "8bit",
                     method: str = "unsloth", images: int = 0, image_tiles: int = 1, dynamic_4bit: bool | None = None,
                     lora_targets: float = 1.0) -> dict:
    """Predicted peak reserved memory, in GiB per part (see the module docstring for the model).

    images: images per example (vision models); lora_targets: fraction of the linear layers given LoRA."""
    if method not in ("unsloth", "hf"):
        raise UserError(f"method {method!r}: choose unsloth or hf")
    if optim not in ADAM_BYTES:
        raise UserError(f"optim {optim!r}: choose one of {', '.join(ADAM_BYTES)}")
    if load_in_4bit:
        weights = shape.quantisable * NF4_BYTES + shape.other * 2
        if dynamic_4bit if dynamic_4bit is not None else shape.vision is not None:
            weights += shape.quantisable * NF4_BYTES * DYNAMIC_4BIT_EXTRA
    else:
        weights = shape.params * 2
    lora_params = r * sum(shape.lora_dims) * lora_targets
    lora = lora_params * LORA_BYTES
    optimizer = lora_params * ADAM_BYTES[optim]
    tokens = batch * seq
    small = 4 * shape.hidden * 2  # final norm in and out, hidden-state gradient, a checkpoint in flight
    if method == "unsloth":
        per_token = shape.vocab * 2 + small
    else:
        per_token = shape.layers * shape.hidden * 2 + shape.vocab * 8 + small
    activations = tokens * per_token
    if shape.vision is not None and images:
        v = shape.vision
        vision_tokens = batch * images * image_tiles * VISION_TOKENS_PER_TILE
        # every vision layer's checkpoint, one layer's recompute with its gradients, the 5 kept intermediate
        # layers and the 7680-wide output projected to the text width for the cross-attention layers
        per_vision_token = 2 * (v["layers"] * v["hidden"] + 1.5 * (5 * v["hidden"] + 3 * v["intermediate"])
                                + 6 * v["hidden"] + 6 * v["hidden"] + shape.hidden)
        activations += vision_tokens * per_vision_token
    return {"weights": weights / GIB, "lora": lora / GIB, "optimizer": optimizer / GIB,
            "activations": activations / GIB, "overhead": OVERHEAD_GIB}


def detect_gpu() -> tuple[str, float] | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return props.name, props.total_memory / GIB


def plan_memory(model: str, gpu: str | None = None, seq: int = 2048, r: int = 16, batch: int = 2,
                load_in_4bit: bool = True, optim: str = "8bit", method: str = "unsloth", images: int = 0,
                shape: Shape | None = None, gpus: int = 1, fsdp: bool = False) -> MemoryPlan:
    """Predict the peak memory of a LoRA run and check it against `gpu`: "t4", "24gb", "h100", a size in GiB
    ("40"), or None for this machine's GPU (a T4 when it has none: the GPU most users start on).

    gpus > 1: the peak of each GPU. DDP (fsdp=False) holds the whole model on every GPU, so the plan is the
    one-GPU plan. FSDP divides the weights, the LoRA weights and the optimizer states by the GPUs, and holds one
    decoder layer gathered whole at a time (its 16-bit-packed weights); activations are per GPU as before."""
    notes = []
    if gpu is None:
        detected = detect_gpu()
        if detected is None:
            gpu_name, gpu_gib = GPUS["t4"]
            notes.append("no GPU on this machine: checked against a T4, the free Colab GPU")
        else:
            gpu_name, gpu_gib = detected
    elif gpu.lower() in GPUS:
        gpu_name, gpu_gib = GPUS[gpu.lower()]
    else:
        try:
            gpu_gib = float(gpu)
        except ValueError:
            raise UserError(f"--gpu {gpu}: choose {', '.join(GPUS)} or a size in GiB like 40") from None
        gpu_name = f"a {gpu_gib:g} GiB GPU"
    for flag, value in (("--max-seq-length", seq), ("--r", r), ("--batch-size", batch)):
        if value <= 0:
            raise UserError(f"{flag} {value}: must be a positive integer")
    if shape is None:
        shape = model_shape(load_config(model), model)
    if seq > shape.max_positions:
        notes.append(f"--max-seq-length {seq} is beyond the model's {shape.max_positions} positions")
    images = images if shape.vision is not None else 0
    if shape.vision is not None and not images:
        notes.append("vision model planned for text only: pass images=1 (--images 1) "
                     "for one 560-pixel image an example")

    def need(seq_=seq, r_=r, batch_=batch, four_bit=load_in_4bit):
        parts = predict_peak_gib(shape, seq_, batch_, r_, four_bit, optim, method, images)
        if fsdp and gpus > 1:
            for name in ("weights", "lora", "optimizer"):
                parts[name] /= gpus
            parts["gathered layer"] = parts["weights"] * gpus / shape.layers
        return parts, sum(parts.values()) + CONTEXT_GIB

    def longest(r_=r, batch_=batch, four_bit=load_in_4bit):
        if need(128, r_, batch_, four_bit)[1] > gpu_gib:
            return None
        low, high = 1, max(1, shape.max_positions // 128)  # in units of 128 tokens
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if need(mid * 128, r_, batch_, four_bit)[1] <= gpu_gib else (low, mid - 1)
        return low * 128

    parts, need_gib = need()
    fits = need_gib <= gpu_gib
    suggestions = []
    if not fits:
        if not load_in_4bit and need(four_bit=True)[1] <= gpu_gib:
            suggestions.append(f"load in 4-bit (QLoRA, --load-in-4bit True): {need(four_bit=True)[1]:.2f} GiB")
        max_seq = longest()
        if max_seq:
            suggestions.append(f"a shorter sequence: --max-seq-length {max_seq} fits "
                               f"({need(seq_=max_seq)[1]:.2f} GiB)")
        for smaller in (r // 2, 8):
            if 0 < smaller < r and need(r_=smaller)[1] <= gpu_gib:
                suggestions.append(f"a smaller rank: --r {smaller} ({need(r_=smaller)[1]:.2f} GiB)")
                break
        if batch > 1 and need(batch_=1)[1] <= gpu_gib:
            suggestions.append(f"--batch-size 1 with --grad-accum doubled: same examples per step "
                               f"({need(batch_=1)[1]:.2f} GiB)")
        if not load_in_4bit and not any("4-bit" in s for s in suggestions) and longest(four_bit=True):
            suggestions.append(f"4-bit with --max-seq-length {longest(four_bit=True)}")
    max_seq = longest()
    return MemoryPlan(model=model, gpu=gpu_name, gpu_gib=round(gpu_gib, 2), seq=seq, batch=batch, r=r,
                      load_in_4bit=load_in_4bit, method=method, parts={k: round(v, 3) for k, v in parts.items()},
                      peak_gib=round(need_gib - CONTEXT_GIB, 3), need_gib=round(need_gib, 3), fits=fits,
                      max_seq=max_seq, suggestions=suggestions, notes=notes, gpus=gpus, fsdp=fsdp)


# The measurements the model is checked against (GiB of torch reserved memory, one H100).
REFERENCES = [
    dict(name="8B 4-bit r=32 batch 2x2048, Unsloth", model="llama-3.1-8b", seq=2048, batch=2, r=32, method="unsloth",
         measured=7.25),
    dict(name="8B 4-bit r=32 batch 2x2048, HF+PEFT", model="llama-3.1-8b", seq=2048, batch=2, r=32, method="hf",
         measured=12.02),
    dict(name="8B 4-bit r=32 padded batch 8x2048, Unsloth", model="llama-3.1-8b", seq=2048, batch=8, r=32,
         method="unsloth", measured=10.73),
    dict(name="8B 4-bit r=32 padded batch 8x2048, HF+PEFT", model="llama-3.1-8b", seq=2048, batch=8, r=32,
         method="hf", measured=28.26),
    dict(name="11B-Vision 4-bit r=16 batch 2, 560-px image + 256 text tokens, Unsloth", model="llama-3.2-11b-vision",
         seq=256, batch=2, r=16, method="unsloth", images=1, measured=9.55),
]


def check_references() -> list[dict]:
    """Prediction against each reference measurement."""
    rows = []
    for ref in REFERENCES:
        shape = model_shape(load_config(ref["model"]), ref["model"])
        parts = predict_peak_gib(shape, ref["seq"], ref["batch"], ref["r"], True, "8bit", ref["method"],
                                 ref.get("images", 0))
        predicted = sum(parts.values())
        rows.append({"reference": ref["name"], "measured_gib": ref["measured"], "predicted_gib": round(predicted, 2),
                     "error_pct": round(100 * (predicted - ref["measured"]) / ref["measured"], 1)})
    return rows

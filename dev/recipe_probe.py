"""Run a recipe file exactly as `python recipes/X.py ...` runs it, and record what its training really did.

    python dev/recipe_probe.py --record probe.json [--t4] [--reload-inputs FILE] recipes/llama_text.py --model ...
    python dev/recipe_probe.py --reload probe.json [--loader peft|unsloth]   # then, in a fresh process

dev/gpu_check runs every recipe through this. The recipe itself is not changed: it runs with runpy under
its own name and argv, after this script has added, around it:

  the batches   A forward pre-hook on the model of every Trainer logs each training forward pass: rows, width,
                attention mask, position_ids, packed_seq_lengths. Unsloth's padding-free batches are one row holding
                several examples, no attention mask, and the examples' lengths in packed_seq_lengths. Each labelled
                position is checked against the training example it belongs to: every sequence in a batch must be
                one of the train dataset's examples token for token; a position may carry a label only where that
                example's own label is that same token (so no masked prompt token and no padding is ever trained),
                the first position of each packed example has none (no example is trained to predict the next one),
                and no label of the example is lost.
  --t4          What a free Colab T4 gets: no bf16 (torch.cuda.is_bf16_supported, and Unsloth's own flag read from
                the compute capability, both say no, so the recipe and Unsloth pick fp16), no FlashAttention (SDPA),
                torch's allocator capped at --memory-cap-gib (default: what a T4's 14.74 GiB leaves after the CUDA
                context, the numbers the memory planner uses), and the recipe's memory plan made for a T4.
                Not emulated: the T4's speed, and its kernels (Unsloth still sees this GPU's compute capability).
  --reload-inputs FILE  After the recipe: the adapter saved in the run directory against the in-memory one,
                tensor by tensor and bit for bit; the in-memory model's logits on one training example (and with the
                adapter disabled) saved to FILE, with that example. `--reload RECORD` then loads, in a fresh process,
                the base model with PEFT and the saved adapter and compares its logits: `--loader peft` with
                transformers alone (in 4-bit with the in-memory model's own quantization config when it was 4-bit: the
                same quantized weights), `--loader unsloth` through Unsloth's from_pretrained on the adapter folder.

  the steps    Each optimizer step's wall time and the real and trained tokens the hooked forwards saw in it, so
                tokens/s can be taken after warm-up steps exactly as scripts/benchmark.py takes it; the peak GPU memory
                reserved (on a CPU, the process's peak RSS) and how many bitsandbytes Linear4bit layers the model has
                (the 4-bit path really taken, not only asked for).
  --dump-train FILE  The first trainer's prepared train dataset (input_ids and labels, what its collator batches)
                as JSON, for scripts/benchmark.py --examples: other trainers then see the very same examples.

The record is JSON, written at the end and also when the recipe fails (the error, and whether it ran out of GPU
memory); the recipe's exit code is kept.
"""
import json
import os
import runpy
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common.memory_plan import CONTEXT_GIB, GPUS  # noqa: E402  (imports nothing heavy: Unsloth must come first)

IGNORE_INDEX = -100
T4_GIB = GPUS["t4"][1]
SHOWN_FORWARDS = 6  # forward passes recorded in full; the rest are counted
SHOWN_PROBLEMS = 10


# ------------------------------------------------------------------ the batches

class BatchLog:
    """What every training forward pass of the hooked models received, checked against the train dataset."""

    def __init__(self):
        self.trainers, self.index, self.forwards, self.problems = [], None, [], []
        self.counts = {"training_forwards": 0, "other_forwards": 0, "unlabelled_forwards": 0, "sequences": 0,
                       "real_tokens": 0, "padded_positions": 0, "trained_positions": 0, "lost_labels": 0,
                       "unknown_sequences": 0, "wrong_labels": 0, "trained_padding": 0, "trained_boundaries": 0,
                       "one_row_packed": 0, "one_row_no_mask": 0, "max_tokens_per_forward": 0,
                       "max_sequences_per_forward": 0, "max_rows": 0, "max_width": 0, "min_sequence_length": None,
                       "max_sequence_length": None}
        self.start = None
        self.steps = []  # per optimizer step of the first trainer, filled by step_clock

    def attach(self, trainer):
        self.trainers.append(trainer)
        trainer.model.register_forward_pre_hook(self.hook, with_kwargs=True)
        if len(self.trainers) == 1:
            trainer.add_callback(step_clock(self))

    def _index(self):
        """{input_ids: [labels, ...]} of the first trainer's prepared train dataset (what its collator batches)."""
        dataset = self.trainers[0].train_dataset
        index = {}
        for ids, labels in zip(dataset["input_ids"], dataset["labels"]):
            index.setdefault(tuple(ids), []).append(list(labels))
        return index

    def problem(self, text):
        if len(self.problems) < SHOWN_PROBLEMS:
            self.problems.append(text)

    def hook(self, module, args, kwargs):
        if not module.training:
            self.counts["other_forwards"] += 1  # evaluation and generation: not training
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        labels = kwargs.get("labels")
        if ids is None or labels is None:
            self.counts["unlabelled_forwards"] += 1
            return
        if self.index is None:
            self.index, self.start = self._index(), time.perf_counter()
        n = self.counts["training_forwards"]
        self.counts["training_forwards"] += 1
        ids, labels = ids.detach().cpu(), labels.detach().cpu()
        mask, positions = kwargs.get("attention_mask"), kwargs.get("position_ids")
        packed = kwargs.get("packed_seq_lengths")
        rows, width = ids.shape
        segments = []  # (row, start, end) of each example in the batch
        if packed is not None and rows == 1:
            start = 0
            for length in packed.detach().cpu().tolist():
                segments.append((0, start, start + int(length)))
                start += int(length)
        elif positions is not None and rows == 1 and mask is None:
            starts = (positions.detach().cpu()[0] == 0).nonzero().flatten().tolist() + [width]
            segments = [(0, a, b) for a, b in zip(starts, starts[1:])]
        elif mask is not None and mask.dim() == 2:
            mask_cpu = mask.detach().cpu()
            for row in range(rows):
                real = mask_cpu[row].nonzero().flatten().tolist()
                if real:
                    segments.append((row, real[0], real[-1] + 1))
        else:
            segments = [(row, 0, width) for row in range(rows)]
        one_row_packed = rows == 1 and mask is None and len(segments) > 1
        self.counts["one_row_packed"] += one_row_packed
        self.counts["one_row_no_mask"] += rows == 1 and mask is None
        covered = [[False] * width for _ in range(rows)]
        real_tokens = 0
        for i, (row, a, b) in enumerate(segments):
            real_tokens += b - a
            for j in range(a, b):
                covered[row][j] = True
            seg_ids = tuple(ids[row, a:b].tolist())
            seg_labels = labels[row, a:b].tolist()
            candidates = self.index.get(seg_ids)
            if candidates is None:
                self.counts["unknown_sequences"] += 1
                self.problem(f"forward {n}: the sequence at row {row}, positions {a}-{b} ({b - a} tokens) is no "
                             "example of the train dataset")
                continue
            want = min(candidates, key=lambda c: sum(x != y for x, y in zip(c, seg_labels)))
            if i > 0 and one_row_packed and seg_labels[0] != IGNORE_INDEX:
                self.counts["trained_boundaries"] += 1
                self.problem(f"forward {n}: the first token of packed example {i} is labelled: the example before "
                             "it would be trained to predict it")
            for j, (got, expected) in enumerate(zip(seg_labels, want)):
                if got != IGNORE_INDEX:
                    self.counts["trained_positions"] += 1
                    if got != expected or got != seg_ids[j]:
                        self.counts["wrong_labels"] += 1
                        self.problem(f"forward {n}: position {a + j} is trained as token {got}; its example "
                                     f"labels it {expected} (-100: not trained) and the token there is {seg_ids[j]}")
                elif expected != IGNORE_INDEX and j > 0:
                    self.counts["lost_labels"] += 1
        padded = 0
        for row in range(rows):
            for j in range(width):
                if not covered[row][j]:
                    padded += 1
                    if labels[row, j] != IGNORE_INDEX:
                        self.counts["trained_padding"] += 1
                        self.problem(f"forward {n}: padding at row {row}, position {j} carries label "
                                     f"{int(labels[row, j])}")
        self.counts["sequences"] += len(segments)
        self.counts["real_tokens"] += real_tokens
        self.counts["padded_positions"] += padded
        self.counts["max_tokens_per_forward"] = max(self.counts["max_tokens_per_forward"], real_tokens)
        self.counts["max_sequences_per_forward"] = max(self.counts["max_sequences_per_forward"], len(segments))
        self.counts["max_rows"] = max(self.counts["max_rows"], rows)
        self.counts["max_width"] = max(self.counts["max_width"], width)
        lengths = [b - a for _, a, b in segments]
        if lengths:
            low, high = self.counts["min_sequence_length"], self.counts["max_sequence_length"]
            self.counts["min_sequence_length"] = min(lengths) if low is None else min(low, *lengths)
            self.counts["max_sequence_length"] = max(lengths) if high is None else max(high, *lengths)
        if n < SHOWN_FORWARDS:
            self.forwards.append({
                "rows": rows, "width": width, "attention_mask": mask is not None, "position_ids": positions is not None,
                "packed_seq_lengths": packed.detach().cpu().tolist() if packed is not None else None,
                "sequence_lengths": [b - a for _, a, b in segments], "padded_positions": padded,
                "position_ids_head": positions.detach().cpu()[0, :12].tolist() if positions is not None else None,
                "other_inputs": sorted(k for k, v in kwargs.items() if v is not None and k not in (
                    "input_ids", "labels", "attention_mask", "position_ids", "packed_seq_lengths"))})

    def summary(self) -> dict:
        c = self.counts
        ok = (c["training_forwards"] > 0 and not any(c[k] for k in ("unknown_sequences", "wrong_labels",
                                                                         "trained_padding", "trained_boundaries")))
        # Padding-free: every training batch one row with no attention mask and no padding, several examples in it.
        padding_free = (c["training_forwards"] > 0 and c["one_row_no_mask"] == c["training_forwards"]
                        and c["padded_positions"] == 0 and c["one_row_packed"] > 0)
        return {**c, "labels_ok": ok, "padding_free": padding_free, "first_forwards": self.forwards,
                "problems": self.problems, "steps": self.steps,
                "seconds_from_first_training_forward": time.perf_counter() - self.start if self.start else None}


def step_clock(log: BatchLog):
    """A Trainer callback: each optimizer step's wall seconds, and the real and trained tokens of its forwards (the
    hook's counts), into log.steps. Made on first use: transformers is imported after Unsloth."""
    import torch
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        start, before = None, (0, 0)

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()
            self.before = (log.counts["real_tokens"], log.counts["trained_positions"])

        def on_step_end(self, args, state, control, **kwargs):
            if self.start is None:
                return
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            log.steps.append({"seconds": time.perf_counter() - self.start,
                              "tokens": log.counts["real_tokens"] - self.before[0],
                              "trained": log.counts["trained_positions"] - self.before[1]})

    return StepClock()


def linear4bit_layers(model) -> int:
    """How many bitsandbytes.nn.Linear4bit layers the model holds (PEFT's LoRA wrapper of one, also named Linear4bit,
    is not counted again)."""
    return len(four_bit_layers(model))


def peak_rss_gib() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ------------------------------------------------------------------ T4 mode

def emulate_t4(cap_gib: float) -> dict:
    """fp16, SDPA, a capped allocator and a T4 memory plan, set before the recipe imports anything else."""
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("error: --t4 needs a GPU")
    torch.cuda.is_bf16_supported = lambda *args, **kwargs: False
    import unsloth  # noqa: F401  first, as in the recipes; it reads the compute capability for its own bf16 flag

    patched = []
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(("unsloth", "unsloth_zoo")):
            continue
        for attr in ("SUPPORTS_BFLOAT16", "HAS_FLASH_ATTENTION", "HAS_FLASH_ATTENTION_SOFTCAPPING"):
            if module.__dict__.get(attr) is True:
                setattr(module, attr, False)
                patched.append(f"{name}.{attr}")
    torch.cuda.is_bf16_supported = lambda *args, **kwargs: False  # again: Unsloth wraps it on import
    import transformers.utils
    import transformers.utils.import_utils
    transformers.utils.is_flash_attn_2_available = lambda *args, **kwargs: False
    transformers.utils.import_utils.is_flash_attn_2_available = lambda *args, **kwargs: False
    props = torch.cuda.get_device_properties(0)
    fraction = min(1.0, cap_gib * 2**30 / props.total_memory)
    torch.cuda.set_per_process_memory_fraction(fraction, 0)
    import common.memory_plan as memory_plan
    gpu_name = f"Tesla T4 (emulated on {props.name}: fp16, SDPA, allocator capped at {cap_gib:.2f} GiB)"
    memory_plan.detect_gpu = lambda: (gpu_name, memory_plan.GPUS["t4"][1])
    from unsloth import is_bfloat16_supported
    return {"cap_gib": cap_gib, "fraction": fraction, "gpu": props.name, "total_gib": props.total_memory / 2**30,
            "patched": patched, "unsloth_bf16": is_bfloat16_supported(), "torch_bf16": torch.cuda.is_bf16_supported()}


# ------------------------------------------------------------------ the adapter, reloaded

def adapter_tensors_match(model, adapter_dir: Path) -> dict:
    """Every tensor in adapter_model.safetensors against the in-memory adapter, bit for bit."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    saved = load_file(str(adapter_dir / "adapter_model.safetensors"))
    in_memory = get_peft_model_state_dict(model)
    missing = sorted(set(in_memory) - set(saved))
    extra = sorted(set(saved) - set(in_memory))
    different = [k for k in saved if k in in_memory
                 and not torch.equal(saved[k], in_memory[k].detach().to("cpu", saved[k].dtype))]
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in saved.values()})
    return {"tensors": len(saved), "different": different[:5], "n_different": len(different), "missing": missing[:5],
            "extra": extra[:5], "saved_dtypes": dtypes, "ok": not (different or missing or extra) and len(saved) > 0}


def reload_inputs(g: dict, path: Path) -> dict:
    """One training example as model inputs, and the in-memory model's logits on it, with and without the adapter."""
    import torch

    model = g["model"]
    device = next(p.device for p in model.parameters())
    if "collator" in g:  # the vision recipe: one example through its own collator (pixel values, cross-attention)
        batch = g["collator"]([g["train_examples"][0]])
    else:
        batch = {"input_ids": torch.tensor([g["train_examples"][0]["input_ids"][:256]])}
        batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    batch = {k: v for k, v in batch.items() if k != "labels" and isinstance(v, torch.Tensor)}
    os.environ["UNSLOTH_RETURN_LOGITS"] = "1"
    model.eval()
    on_device = {k: v.to(device) for k, v in batch.items()}
    with torch.no_grad():
        tuned = model(**on_device).logits.float().cpu()
        with model.disable_adapter():
            base = model(**on_device).logits.float().cpu()
    quant = getattr(model.config, "quantization_config", None)
    if quant is not None and not isinstance(quant, dict):
        quant = quant.to_dict()
    adapter_dir = Path(g["run_dir"]) / "adapter"
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    torch.save({"inputs": batch, "tuned": tuned, "base": base}, path)
    # how the run's 4-bit layers and LoRA weights computed those logits, for a reload to do the same (on a CPU)
    repacked = any(getattr(getattr(m.weight, "quant_state", None), "packing_format_for_cpu", False)
                   for m in four_bit_layers(model))
    lora_dtypes = {str(p.dtype).removeprefix("torch.") for n, p in model.named_parameters() if "lora_" in n}
    return {"path": str(path), "adapter_dir": str(adapter_dir), "base_model": config.get("base_model_name_or_path"),
            "quantization_config": quant, "dtype": str(g.get("dtype", "")).removeprefix("torch."),
            "load_in_4bit": bool(g.get("load_in_4bit")),
            "max_seq_length": getattr(g.get("cfg"), "max_seq_length", None),
            "vision": "collator" in g, "tokens": int(batch["input_ids"].shape[1]), "cpu_repacked": repacked,
            "lora_dtype": lora_dtypes.pop() if len(lora_dtypes) == 1 else None}


def four_bit_layers(model) -> list:
    return [m for m in model.modules()
            if type(m).__name__ == "Linear4bit" and type(m).__module__.startswith("bitsandbytes")]


def cpu_4bit_as_trained(model, spec: dict):
    """A CPU reload computes as the run did. (1) bitsandbytes 0.50 on a CPU with AVX512-BF16 repacks a Linear4bit's
    weight at its first forward in eval mode without gradients, for a faster kernel whose block scales are rounded to
    bf16 (outputs move by up to about 1e-2); the run's layers were not repacked (Unsloth's CPU path dequantizes itself,
    the vision recipe turns it off), so neither are these, unless the run's were. (2) TRL keeps the LoRA weights of a
    4-bit model in bf16, and PEFT loads a saved adapter in float32 (autocast_adapter_dtype): the LoRA weights are put
    back in the dtype the run trained and saved them in."""
    import torch

    from common.four_bit import unpacked_cpu_4bit

    if not spec.get("cpu_repacked"):
        unpacked_cpu_4bit(model)
    if spec.get("lora_dtype"):
        dtype = getattr(torch, spec["lora_dtype"])
        for name, param in model.named_parameters():
            if "lora_" in name and param.dtype != dtype:
                param.data = param.data.to(dtype)


def reload_check(record_path: Path, loader: str) -> dict:
    """In a fresh process: the base model with the saved adapter, its logits against the in-memory model's (saved by
    the first process). loader "peft": transformers + PEFT, no Unsloth (what scripts/export.py merges with); the same
    weights through other kernels, so 16-bit logits agree to rounding, float32 ones exactly (4-bit on a CPU too: the
    reloaded layers are kept as the run had them, see cpu_4bit_as_trained). loader "unsloth":
    FastLanguageModel / FastVisionModel.from_pretrained on the adapter directory (PEFT on the base, with Unsloth's
    kernels, as the run had them): the same computation, so the logits must be identical. The result goes into the
    record under reload.LOADER."""
    import torch

    if loader == "unsloth":
        import unsloth  # noqa: F401  before transformers
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, BitsAndBytesConfig

    record = json.loads(record_path.read_text())
    spec = record["reload_inputs"]
    saved = torch.load(spec["path"])
    on_gpu = torch.cuda.is_available()
    dtype = getattr(torch, spec["dtype"]) if spec["dtype"] else torch.float32
    base_config = AutoConfig.from_pretrained(spec["base_model"])
    prequantized = bool(getattr(base_config, "quantization_config", None))
    quantized = prequantized or bool(spec["quantization_config"])
    start = time.time()
    if loader == "unsloth":
        from unsloth import FastLanguageModel, FastVisionModel
        fast = FastVisionModel if spec["vision"] else FastLanguageModel
        kwargs = {} if spec["vision"] else {"max_seq_length": spec.get("max_seq_length") or 2048}
        model, _ = fast.from_pretrained(spec["adapter_dir"], dtype=dtype, load_in_4bit=bool(spec["load_in_4bit"]),
                                        **kwargs)
        fast.for_inference(model)
    else:
        kwargs = {"dtype": dtype}
        if spec["quantization_config"] and not prequantized:
            quant = {k: v for k, v in spec["quantization_config"].items()
                     if not k.startswith("_") and k != "quant_method"}
            kwargs["quantization_config"] = BitsAndBytesConfig.from_dict(quant)
        if on_gpu:
            kwargs["device_map"] = {"": 0}
        auto = AutoModelForImageTextToText if spec["vision"] else AutoModelForCausalLM
        model = PeftModel.from_pretrained(auto.from_pretrained(spec["base_model"], **kwargs), spec["adapter_dir"])
        if not on_gpu:
            cpu_4bit_as_trained(model, spec)
        model.eval()
    device = next(p.device for p in model.parameters())
    os.environ["UNSLOTH_RETURN_LOGITS"] = "1"
    inputs = {k: v.to(device) for k, v in saved["inputs"].items()}
    with torch.no_grad():
        reloaded = model(**inputs).logits.float().cpu()
        base_again = None
        if hasattr(model, "disable_adapter"):
            with model.disable_adapter():
                base_again = model(**inputs).logits.float().cpu()
    tuned, base = saved["tuned"], saved["base"]
    scale = float(tuned.abs().max())
    diff = float((reloaded - tuned).abs().max())
    effect = float((base - tuned).abs().max())
    # How far the base model alone (adapter off) lands from the in-memory one: the two kernels' own difference.
    kernels = float((base_again - base).abs().max()) if base_again is not None else None
    top1 = float((reloaded.argmax(-1) == tuned.argmax(-1)).float().mean())
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    result = {"loader": loader, "seconds": round(time.time() - start, 1), "loaded_as": type(inner).__name__,
              "quantized": quantized, "max_abs_logit": scale, "max_abs_diff": diff,
              "relative_diff": diff / scale if scale else None, "adapter_effect_max_abs": effect,
              "base_max_abs_diff": kernels, "top1_agreement": top1, "identical": diff == 0.0,
              "positions": int(tuned.shape[1])}
    if dtype == torch.float32:
        # float32 (a CPU): any two implementations agree to rounding, so identical or as good as.
        result["tolerance"] = 1e-5
        result["ok"] = bool(result["relative_diff"] is not None and result["relative_diff"] <= result["tolerance"]
                            and top1 == 1.0)
    elif loader == "unsloth":
        # The same kernels on the same quantized weights: identical is expected ("identical" says whether it was);
        # a little slack for an adapter PEFT loads in another dtype than training kept it (fp32 vs 16-bit).
        result["tolerance"] = 1e-3
        result["ok"] = bool(result["relative_diff"] is not None and result["relative_diff"] <= result["tolerance"]
                            and top1 >= 0.98)
    else:
        # 16-bit weights through other kernels: the reloaded model must be far closer to the tuned one than the
        # base (adapter off) is; top-1 can flip where a random model's two best logits are nearly tied.
        result["tolerance"] = 5e-2
        result["ok"] = bool(result["relative_diff"] is not None and result["relative_diff"] <= result["tolerance"]
                            and (effect == 0 or diff < 0.25 * effect) and top1 >= 0.9)
    record.setdefault("reload", {})[loader] = result
    record_path.write_text(json.dumps(record, indent=1, default=str))
    return result


# ------------------------------------------------------------------ the recipe

def main(argv: list[str]) -> int:
    recipe_at = next((i for i, a in enumerate(argv) if a.endswith(".py")), None)
    own = argv if recipe_at is None else argv[:recipe_at]
    if own[:1] == ["--reload"] and len(own) in (2, 4):
        loader = own[3] if len(own) == 4 and own[2] == "--loader" else "peft"
        result = reload_check(Path(own[1]), loader)
        print(f"reload ({loader}): {json.dumps(result)}")
        return 0 if result["ok"] else 1
    import argparse
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     usage="%(prog)s --record FILE [--t4] [--reload-inputs FILE] RECIPE.py [ARGS]")
    parser.add_argument("--record", required=True)
    parser.add_argument("--t4", action="store_true")
    parser.add_argument("--memory-cap-gib", type=float, default=T4_GIB - CONTEXT_GIB)
    parser.add_argument("--reload-inputs", default=None)
    parser.add_argument("--dump-train", default=None)
    args = parser.parse_args(own)
    if recipe_at is None:
        parser.error("no recipe: give the recipe's .py file after the probe's own flags")
    recipe, recipe_args = argv[recipe_at], argv[recipe_at + 1:]
    record_path = Path(args.record)
    record = {"recipe": recipe, "args": recipe_args, "t4": None, "ok": False}

    def write():
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(record, indent=1, default=str))

    if args.t4:
        record["t4"] = emulate_t4(args.memory_cap_gib)
    import unsloth  # noqa: F401  before transformers and trl, as the recipe itself does first
    import torch
    import transformers

    log = BatchLog()
    original_init = transformers.Trainer.__init__

    def init(self, *a, **k):
        original_init(self, *a, **k)
        log.attach(self)

    transformers.Trainer.__init__ = init
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    sys.argv = [recipe, *recipe_args]
    start = time.time()
    g = {}
    try:
        g = runpy.run_path(recipe, run_name="__main__")
        record["ok"] = True
    except BaseException as err:  # noqa: BLE001  recorded, then raised again: the recipe's own exit and message
        text = f"{type(err).__name__}: {err}"
        record["error"] = {"type": type(err).__name__, "message": str(err)[:2000],
                           "out_of_memory": isinstance(err, torch.OutOfMemoryError) or "out of memory" in text.lower(),
                           "traceback": traceback.format_exc()[-3000:]}
        raise
    finally:
        record["seconds"] = round(time.time() - start, 1)
        record["batches"] = log.summary()
        if torch.cuda.is_available():
            record["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
        record["peak_rss_gib"] = peak_rss_gib()
        trainer = log.trainers[0] if log.trainers else None
        if trainer is not None:
            collator = trainer.data_collator
            record["trainer"] = {"bf16": trainer.args.bf16, "fp16": trainer.args.fp16,
                                 "padding_free": getattr(trainer.args, "padding_free", None),
                                 "collator": type(collator).__name__,
                                 "collator_padding_free": getattr(collator, "padding_free", None),
                                 "optim": str(trainer.args.optim)}
        model = g.get("model")
        if model is None and trainer is not None:
            model = trainer.model
        if model is not None:
            quant = getattr(model.config, "quantization_config", None)
            quant = quant if isinstance(quant, dict) or quant is None else quant.to_dict()
            record["model"] = {"dtype": str(g.get("dtype", "")).removeprefix("torch."),
                               "attention": getattr(model.config, "_attn_implementation", None),
                               "class": type(model).__name__, "load_in_4bit": g.get("load_in_4bit"),
                               "linear4bit_layers": linear4bit_layers(model),
                               "quantization": {k: (quant or {}).get(k) for k in (
                                   "quant_method", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant")}
                               if quant else None}
        if g.get("run_dir"):
            record["run_dir"] = str(g["run_dir"])
        if args.dump_train and trainer is not None:
            dataset = trainer.train_dataset
            rows = [{"input_ids": list(ids), "labels": list(labels)}
                    for ids, labels in zip(dataset["input_ids"], dataset["labels"])]
            Path(args.dump_train).write_text(json.dumps(rows))
            record["dumped_train"] = {"path": args.dump_train, "examples": len(rows)}
        write()
    if args.reload_inputs:
        try:
            adapter_dir = Path(g["run_dir"]) / "adapter"
            record["adapter_tensors"] = adapter_tensors_match(g["model"], adapter_dir)
            record["reload_inputs"] = reload_inputs(g, Path(args.reload_inputs))
        except Exception as err:  # noqa: BLE001  the run itself succeeded: record why the check could not be made
            record["reload_error"] = f"{type(err).__name__}: {err}"[:2000]
            traceback.print_exc()
        write()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

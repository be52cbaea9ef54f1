"""Speed and memory of the recipes' training path against plain transformers + PEFT, on the same data.

    python scripts/benchmark.py --arch llama-3.1-8b --max-seq-length 2048 --batch-size 2 --grad-accum 4   # GPU
    python scripts/benchmark.py --arch llama-3.1-8b --lengths real --batch-size 8 --grad-accum 1   # bundled lengths
    python scripts/benchmark.py --device cpu --arch tiny --max-seq-length 128 --max-steps 4        # CPU: keeps it alive
    python scripts/benchmark.py --arch deepseek-llm-7b --model-dir DIR --examples train.json --runs unsloth,hf

The flags are the recipes' own: --max-seq-length, --batch-size, --grad-accum, --max-steps, --r.

The model is built with random weights from a bundled config (benchmarks/configs/ARCH.json, written from the
real config.json values), so nothing is downloaded: speed and memory depend on shapes, not on trained weights.
Each run is its own subprocess (importing Unsloth patches transformers, so the runs must not share one):
  recipe          the recipes' path: FastLanguageModel (4-bit on a GPU) + get_peft_model + TRL SFTTrainer given
                  input_ids and labels and no data_collator (Unsloth batches padding-free on a GPU; pads on a CPU)
  unsloth_padded  the same with transformers' padding collator, so every batch is padded (--lengths real)
  unsloth         raw Unsloth as its notebooks use it: input_ids only, every token trained (GPU, --lengths fixed)
  hf              transformers AutoModelForCausalLM (+ BitsAndBytesConfig nf4 when 4-bit) + PEFT get_peft_model +
                  gradient checkpointing + HF Trainer, padded batches
4-bit (nf4, double quantisation) on a GPU; float32 on a CPU unless --load-in-4bit (bitsandbytes' CPU backend loads
and trains nf4 too, more slowly than float32 there); --no-load-in-4bit: 16-bit on a GPU.
--lengths fixed: every example is --max-seq-length random tokens, the first quarter masked as the prompt.
--lengths real:  the examples of datasets/chat_multiturn/train.jsonl with exact assistant-only labels (the tiny
                 model's tokenizer); for a big arch, lengths and label masks are scaled so the longest is
                 --max-seq-length.
--examples FILE: a JSON list of {"input_ids", "labels"} instead (dev/recipe_probe.py --dump-train writes a
                 recipe's own prepared train set): every run gets all of them, so it trains on what the recipe did.
Reports the median step time after --warmup steps, tokens/s (all real tokens, and trained tokens), peak memory
(GPU reserved; on a CPU, the process's peak RSS), MFU against the GPU's dense 16-bit peak (LoRA: 4 x matmul
parameters per token + causal attention; the recompute of gradient checkpointing is not counted) and the first
losses, which must agree. Writes OUT/results.json and OUT/table.md (OUT is --out).
--model-dir DIR times a model directory already built (random weights of ARCH's shape; dev/gpu_check passes
the one it built) instead of building ARCH into the cache.
"""
import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import common.startup  # noqa: E402, F401  before torch loads: how long idle threads spin (common/startup.py)
from common.errors import UserError, report_user_errors  # noqa: E402

ARCHS = ["tiny", "llama-3.1-8b", "llama-3.2-3b", "deepseek-llm-7b", "llama-3.2-11b-vision"]
LABELS = {"recipe": "recipe (Unsloth, its own batching)", "unsloth_padded": "Unsloth, padded batches",
          "unsloth": "raw Unsloth (all tokens trained)", "hf": "HF + PEFT, padded batches"}
# Dense 16-bit tensor-core peaks, TFLOP/s, by a fragment of torch.cuda.get_device_name() (first match wins).
PEAK_TFLOPS = [("H100 PCIe", 756), ("H100", 989), ("H200", 989), ("B200", 2250), ("A100", 312), ("L40S", 362),
               ("L4", 121), ("A10G", 70), ("A10", 125), ("RTX 4090", 165), ("RTX 3090", 71), ("V100", 125), ("T4", 65)]
IGNORE_INDEX = -100


# ---------------------------------------------------------------- data and model (parent process)

def random_model_dir(arch: str) -> Path:
    """A local copy of ARCH with random bf16 weights (built once, cached) and the tiny Llama-3 tokenizer."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from common.tiny.cache import build_once, cache_key, cache_root
    from common.tiny.llama import tiny_model_path

    if arch == "tiny":
        return tiny_model_path("llama3")
    config_file = ROOT / "benchmarks" / "configs" / f"{arch}.json"
    tokenizer_dir = tiny_model_path("llama3")  # token ids are random: any tokenizer of the chat format will do
    # keyed by the config file and the tokenizer's own build (its folder name is its key)
    directory = cache_root() / f"random-{arch}-{cache_key(arch, tokenizer_dir.name, files=[config_file])}"

    def build(staging: Path):
        print(f"building a random-weight {arch} from benchmarks/configs/{arch}.json (once; cached in {directory})",
              flush=True)
        config = AutoConfig.from_pretrained(str(config_file))
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(staging)
        for name in os.listdir(tokenizer_dir):
            if name.startswith(("tokenizer", "special_tokens")):
                shutil.copy(tokenizer_dir / name, staging / name)

    return build_once(directory, build)


def build_examples(lengths: str, seq: int, vocab: int, count: int, seed: int) -> list[dict]:
    """Examples {"input_ids", "labels"}: fixed-length random tokens, or the bundled chats' real lengths."""
    rng = random.Random(seed)
    if lengths == "fixed":
        prompt = seq // 4
        examples = []
        for _ in range(count):
            ids = [rng.randrange(10, vocab) for _ in range(seq)]
            examples.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
        return examples
    from transformers import AutoTokenizer

    from common.data import load_conversations
    from common.labels import build_dataset
    from common.tiny.llama import tiny_model_path

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path("llama3"))
    conversations = load_conversations(ROOT / "datasets" / "chat_multiturn" / "train.jsonl").conversations
    real, _ = build_dataset(tokenizer, conversations, "all_turns", seq)
    if vocab == len(tokenizer) or vocab <= 4096:  # the tiny model: the real tokens
        return real
    scale = seq / max(len(e["input_ids"]) for e in real)
    examples = []
    for e in real:  # the same shape at a larger scale: lengths and the trained mask stretched by `scale`
        n = len(e["input_ids"])
        m = max(2, min(seq, round(n * scale)))
        ids = [rng.randrange(10, vocab) for _ in range(m)]
        labels = [ids[j] if e["labels"][min(n - 1, int(j / scale))] != IGNORE_INDEX else IGNORE_INDEX for j in range(m)]
        examples.append({"input_ids": ids, "labels": labels})
    return examples


def load_examples(path: str, vocab: int) -> list[dict]:
    """--examples FILE: [{"input_ids": [...], "labels": [...]}, ...], checked against the model's vocabulary."""
    try:
        examples = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"--examples {path}: cannot read it as JSON ({err})") from None
    if not isinstance(examples, list) or not examples or not all(
            isinstance(e, dict) and isinstance(e.get("input_ids"), list) and isinstance(e.get("labels"), list)
            and len(e["input_ids"]) == len(e["labels"]) > 0 for e in examples):
        raise UserError(f"--examples {path}: expected a non-empty JSON list of {{input_ids, labels}} of equal length")
    top = max(max(e["input_ids"]) for e in examples)
    if top >= vocab:
        raise UserError(f"--examples {path}: token id {top} is outside the model's vocabulary of {vocab}")
    return [{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples]


# ---------------------------------------------------------------- one run (child process)

class Counter:
    """Counts what each forward pass sees (real tokens, trained tokens, sum of squared sequence lengths for the
    attention FLOPs), and snapshots it at every optimizer step."""

    def __init__(self):
        self.tokens = self.trained = self.padded = self.attn = self.max_batch = 0
        self.steps = []

    def hook(self, module, args, kwargs):
        ids, mask, labels = kwargs.get("input_ids"), kwargs.get("attention_mask"), kwargs.get("labels")
        positions = kwargs.get("position_ids")
        if ids is None:
            return
        self.padded += ids.numel()
        self.max_batch = max(self.max_batch, ids.numel())
        if mask is not None and mask.dim() == 2:
            lengths = mask.sum(dim=1).tolist()
        elif positions is not None and ids.shape[0] == 1:  # padding-free: a new sequence starts at position 0
            starts = (positions[0] == 0).nonzero().flatten().tolist() + [positions.shape[-1]]
            lengths = [b - a for a, b in zip(starts, starts[1:])]
        else:
            lengths = [ids.shape[1]] * ids.shape[0]
        self.tokens += sum(lengths)
        self.attn += sum(n * n for n in lengths)
        if labels is not None:
            self.trained += int((labels != IGNORE_INDEX).sum())

    def snapshot(self):
        self.steps.append({"tokens": self.tokens, "trained": self.trained, "padded": self.padded, "attn": self.attn})


def worker(spec: dict) -> dict:
    kind, device = spec["kind"], spec["device"]
    if kind != "hf":
        from unsloth import FastLanguageModel  # first: Unsloth patches transformers and TRL
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    from common.lora import PRESETS
    from common.train_log import StepTimer

    on_gpu = device == "cuda"
    if on_gpu and not torch.cuda.is_available():
        raise UserError("--device cuda: no GPU here; use --device cpu")
    dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if on_gpu else torch.float32
    four_bit = spec["four_bit"]
    examples = json.loads(Path(spec["data"]).read_text())
    if kind == "unsloth":
        examples = [{"input_ids": e["input_ids"]} for e in examples]
    targets = PRESETS["all-linear"]
    counter, timer = Counter(), StepTimer()

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            counter.snapshot()

    common_args = dict(
        output_dir=spec["out"] + f"/{kind}-trainer", per_device_train_batch_size=spec["batch"],
        gradient_accumulation_steps=spec["accum"], learning_rate=2e-4, max_steps=spec["steps"], warmup_steps=0,
        lr_scheduler_type="constant", optim=("adamw_8bit" if on_gpu else "adamw_torch"), weight_decay=0.01,
        max_grad_norm=0.3, bf16=on_gpu and dtype == torch.bfloat16, fp16=on_gpu and dtype == torch.float16,
        logging_steps=1, save_strategy="no", seed=spec["seed"], report_to="none", dataloader_num_workers=0)
    if kind == "hf":
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        from transformers import (AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, DataCollatorForSeq2Seq,
                                  Trainer, TrainingArguments)
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=dtype) if four_bit else None
        model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=dtype, quantization_config=quant,
                                                     device_map={"": 0} if on_gpu else None)
        tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
        if tokenizer.pad_token is None:  # a real Llama-3 tokenizer has none: pad with EOS (those labels are -100)
            tokenizer.pad_token = tokenizer.eos_token
        if four_bit:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
        else:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()
        model.config.use_cache = False
        model = get_peft_model(model, LoraConfig(r=spec["r"], lora_alpha=spec["r"], lora_dropout=0.0, bias="none",
                                                 target_modules=targets, task_type="CAUSAL_LM"))
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
        trainer = Trainer(model=model, args=TrainingArguments(**common_args), train_dataset=Dataset.from_list(examples),
                          data_collator=collator,
                          callbacks=[timer, Snapshot()])
    else:
        from transformers import DataCollatorForSeq2Seq
        from trl import SFTConfig, SFTTrainer
        model, tokenizer = FastLanguageModel.from_pretrained(model_name=spec["model_dir"], max_seq_length=spec["seq"],
                                                             dtype=dtype, load_in_4bit=four_bit)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = FastLanguageModel.get_peft_model(model, r=spec["r"], lora_alpha=spec["r"], lora_dropout=0.0,
                                                 bias="none", target_modules=targets, random_state=spec["seed"],
                                                 use_gradient_checkpointing="unsloth", max_seq_length=spec["seq"])
        extra = {}
        if kind == "unsloth_padded":  # a collator of our own turns Unsloth's padding-free batching off
            extra["data_collator"] = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
        trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=Dataset.from_list(examples),
                             args=SFTConfig(**common_args, max_length=spec["seq"]), callbacks=[timer, Snapshot()],
                             **extra)
    model.register_forward_pre_hook(counter.hook, with_kwargs=True)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    steps = [{**b, **{k: b[k] - a[k] for k in b}} for a, b in zip([{k: 0 for k in counter.steps[0]}] + counter.steps,
                                                                   counter.steps)] if counter.steps else []
    return {
        "kind": kind, "device": torch.cuda.get_device_name(0) if on_gpu else "cpu",
        "dtype": str(dtype).removeprefix("torch."), "four_bit": four_bit,
        "step_seconds": timer.seconds, "steps": steps, "max_batch_tokens": counter.max_batch, "losses": losses,
        "seconds": seconds,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "peak_gib": torch.cuda.max_memory_reserved() / 2**30 if on_gpu
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "peak_kind": "GPU reserved" if on_gpu else "process peak RSS",
    }


# ---------------------------------------------------------------- summary (parent process)

def summarise(result: dict, warmup: int, matmul_params: int, attn_factor: float, peak_tflops: float | None) -> dict:
    seconds, steps = result["step_seconds"], result["steps"]
    timed = list(range(warmup, len(seconds))) or list(range(len(seconds)))
    total = sum(seconds[i] for i in timed)
    tokens = sum(steps[i]["tokens"] for i in timed)
    trained = sum(steps[i]["trained"] for i in timed)
    padded = sum(steps[i]["padded"] for i in timed)
    flops = 4 * matmul_params * tokens + attn_factor * sum(steps[i]["attn"] for i in timed)
    return {
        "run": result["kind"], "label": LABELS[result["kind"]], "device": result["device"],
        "dtype": result["dtype"] + (" + nf4" if result["four_bit"] else ""),
        "median_step_s": statistics.median(seconds[i] for i in timed), "timed_steps": len(timed),
        "tokens_per_s": tokens / total, "trained_tokens_per_s": trained / total,
        "padding_pct": 100 * (padded - tokens) / padded if padded else 0.0,
        "peak_gib": result["peak_gib"], "peak_kind": result["peak_kind"],
        "mfu_pct": 100 * flops / total / (peak_tflops * 1e12) if peak_tflops else None,
        "first_loss": result["losses"][0] if result["losses"] else None, "losses": result["losses"],
        "trainable_params": result["trainable_params"],
    }


def table(rows: list[dict], predicted: dict) -> str:
    lines = ["| run | dtype | median step (s) | tokens/s | trained tokens/s | padding | peak memory (GiB) | "
             "predicted (GiB) | MFU | first loss |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        mfu = f"{r['mfu_pct']:.1f}%" if r["mfu_pct"] is not None else "-"
        pred = f"{predicted[r['run']]:.2f}" if predicted.get(r["run"]) else "-"
        lines.append(f"| {r['label']} | {r['dtype']} | {r['median_step_s']:.3f} | {r['tokens_per_s']:,.0f} | "
                     f"{r['trained_tokens_per_s']:,.0f} | {r['padding_pct']:.0f}% | {r['peak_gib']:.2f} "
                     f"({r['peak_kind']}) | {pred} | {mfu} | {r['first_loss']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="llama-3.1-8b", choices=ARCHS)
    parser.add_argument("--device", default=None, choices=["cuda", "cpu"], help="default: cuda if there is a GPU")
    parser.add_argument("--lengths", default="fixed", choices=["fixed", "real"],
                        help="fixed: every example --max-seq-length tokens; real: the bundled chats' lengths")
    parser.add_argument("--max-seq-length", "--max_seq_length", dest="seq", type=int, default=2048,
                        help="tokens per example (fixed) or of the longest example (real); default 2048")
    parser.add_argument("--batch-size", "--batch_size", dest="batch", type=int, default=2,
                        help="examples per forward pass (default 2)")
    parser.add_argument("--grad-accum", "--grad_accum", dest="accum", type=int, default=4,
                        help="gradient accumulation: micro batches per optimizer step (default 4)")
    parser.add_argument("--r", type=int, default=32, help="LoRA rank on every linear layer (alpha = r)")
    parser.add_argument("--max-steps", "--max_steps", dest="steps", type=int, default=12,
                        help="optimizer steps per run (default 12)")
    parser.add_argument("--model-dir", default=None,
                        help="a model directory of ARCH's shape to time, instead of building one (random weights)")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing")
    parser.add_argument("--runs", default=None, help="comma-separated, of: " + ", ".join(LABELS) +
                        " (default: recipe,unsloth,hf for fixed lengths, recipe,unsloth_padded,hf for real; "
                        "recipe,hf on a CPU)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense 16-bit peak, for MFU")
    parser.add_argument("--load-in-4bit", action=argparse.BooleanOptionalAction, default=None,
                        help="nf4 weights (default: on a GPU yes, on a CPU no: float32)")
    parser.add_argument("--examples", default=None,
                        help="a JSON list of {input_ids, labels} to train on instead of --lengths' examples")
    parser.add_argument("--seed", type=int, default=3407)
    parser.add_argument("--out", default=None, help="default: runs/benchmark/ARCH-LENGTHS-DEVICE")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one run, from its spec file
    args = parser.parse_args(argv)

    if args.worker:
        spec = json.loads(Path(args.worker).read_text())
        Path(spec["result"]).write_text(json.dumps(worker(spec)))
        return

    import torch

    from common.memory_plan import load_config, model_shape, predict_peak_gib

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no GPU on this machine; use --device cpu --arch tiny")
    if args.arch == "llama-3.2-11b-vision":
        raise UserError("--arch llama-3.2-11b-vision: this benchmark times the text path (FastLanguageModel) only; "
                        "timing a vision run (FastVisionModel, images) is not built in yet. scripts/plan_memory.py "
                        "--model llama-3.2-11b-vision --images 1 predicts its memory")
    if device == "cpu" and args.arch != "tiny":
        raise UserError(f"--device cpu --arch {args.arch}: a real-size model is far too slow on a CPU; use --arch tiny")
    for flag, value in (("--max-seq-length", args.seq), ("--batch-size", args.batch), ("--grad-accum", args.accum),
                        ("--max-steps", args.steps), ("--r", args.r)):
        if value <= 0:
            raise UserError(f"{flag} {value}: must be a positive integer")
    if args.model_dir and not (Path(args.model_dir) / "config.json").is_file():
        raise UserError(f"--model-dir {args.model_dir}: no config.json there; give a model directory")
    default_runs = (["recipe", "hf"] if device == "cpu" else
                    ["recipe", "unsloth", "hf"] if args.lengths == "fixed" else ["recipe", "unsloth_padded", "hf"])
    runs = [r.strip() for r in args.runs.split(",")] if args.runs else default_runs
    unknown = [r for r in runs if r not in LABELS]
    if unknown:
        raise UserError(f"--runs {', '.join(unknown)}: choose from {', '.join(LABELS)}")
    out = Path(args.out or ROOT / "runs" / "benchmark" / f"{args.arch}-{args.lengths}-{device}")
    out.mkdir(parents=True, exist_ok=True)

    model_dir = Path(args.model_dir) if args.model_dir else random_model_dir(args.arch)
    shape = model_shape(load_config(str(model_dir)), args.arch)
    need = args.steps * args.batch * args.accum
    if args.examples:
        examples = load_examples(args.examples, shape.vocab)
    else:
        examples = build_examples(args.lengths, args.seq, shape.vocab, need, args.seed)
    four_bit = args.load_in_4bit if args.load_in_4bit is not None else device == "cuda"
    (out / "data.json").write_text(json.dumps(examples))
    lengths = sorted(len(e["input_ids"]) for e in examples)
    print(f"{args.arch}: {shape.params / 1e9:.3f}B parameters (random weights, {model_dir}); {len(examples)} examples, "
          f"{lengths[0]}-{lengths[-1]} tokens (median {lengths[len(lengths) // 2]}); batch {args.batch} x accum "
          f"{args.accum}, r={args.r}, {args.steps} steps on {device}", flush=True)
    if device == "cpu":
        what = "nf4 weights (bitsandbytes' CPU backend) with float32 compute" if four_bit else \
            "in float32 (no nf4 unless --load-in-4bit)"
        print(f"CPU: every run trains {what}, and Unsloth pads batches (its padding-free batching is GPU-only); "
              "timings only check that the script works", flush=True)

    results = []
    for kind in runs:
        spec = {"kind": kind, "device": device, "four_bit": four_bit, "model_dir": str(model_dir),
                "data": str(out / "data.json"), "result": str(out / f"{kind}.json"), "out": str(out),
                "seq": args.seq, "batch": args.batch, "accum": args.accum, "r": args.r, "steps": args.steps,
                "seed": args.seed}
        (out / f"{kind}.spec.json").write_text(json.dumps(spec))
        print(f"run {kind}: {LABELS[kind]} ...", flush=True)
        start = time.time()
        proc = subprocess.run([sys.executable, __file__, "--worker", str(out / f"{kind}.spec.json")], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        (out / f"{kind}.log").write_text(proc.stdout)
        if proc.returncode != 0:
            print(proc.stdout[-4000:])
            raise SystemExit(f"error: run {kind} failed with exit code {proc.returncode}; log: {out / f'{kind}.log'}")
        print(f"  done in {time.time() - start:.0f} s", flush=True)
        results.append(json.loads((out / f"{kind}.json").read_text()))

    peak_tflops = args.peak_tflops
    if peak_tflops is None and device == "cuda":
        name = torch.cuda.get_device_name(0)
        peak_tflops = next((tf for fragment, tf in PEAK_TFLOPS if fragment in name), None)
    attn_factor = 6 * shape.layers * shape.attention_width  # causal fwd 2*L*d*n^2, backward twice that
    rows = [summarise(r, args.warmup, shape.matmul_params, attn_factor, peak_tflops) for r in results]
    predicted = {}
    if device == "cuda":
        for row in rows:
            tokens = next(r for r in results if r["kind"] == row["run"])["max_batch_tokens"]
            predicted[row["run"]] = sum(predict_peak_gib(shape, tokens, 1, args.r, four_bit, "8bit",
                                                         "hf" if row["run"] == "hf" else "unsloth").values())
    first = {r["run"]: r["first_loss"] for r in rows if r["run"] != "unsloth"}
    spread = max(first.values()) - min(first.values()) if len(first) > 1 else 0.0
    agree = spread <= 0.02 * max(abs(v) for v in first.values()) if first else True
    report = {"arch": args.arch, "device": device, "lengths": "examples" if args.examples else args.lengths,
              "examples": args.examples, "four_bit": four_bit, "seq": args.seq, "batch": args.batch,
              "accum": args.accum, "r": args.r, "steps": args.steps, "warmup": args.warmup,
              "params": shape.params, "matmul_params": shape.matmul_params, "peak_tflops": peak_tflops,
              "runs": rows, "first_losses": first, "first_losses_agree": agree, "predicted_peak_gib": predicted}
    if "recipe" in first and "hf" in first:
        by = {r["run"]: r for r in rows}
        report["speedup_recipe_vs_hf"] = by["recipe"]["tokens_per_s"] / by["hf"]["tokens_per_s"]
    if {"recipe", "unsloth"} <= {r["run"] for r in rows}:
        by = {r["run"]: r for r in rows}
        report["recipe_slowdown_vs_raw_unsloth_pct"] = 100 * (by["unsloth"]["tokens_per_s"] /
                                                              by["recipe"]["tokens_per_s"] - 1)
    (out / "results.json").write_text(json.dumps(report, indent=1))
    data = f"the examples of {args.examples}" if args.examples else f"{args.lengths} lengths"
    md = (f"{args.arch} on {rows[0]['device']}, {data}, seq {args.seq}, batch {args.batch} x accum "
          f"{args.accum}, r={args.r} on all linear layers, {args.steps} steps (median of the last "
          f"{rows[0]['timed_steps']})\n\n" + table(rows, predicted))
    if first:
        losses = ", ".join(f"{k} {v:.4f}" for k, v in first.items())
        md += f"\nfirst losses: {losses} ({'agree' if agree else 'DIFFER'})\n"
    (out / "table.md").write_text(md)
    print(md)
    print(f"wrote {out / 'results.json'} and {out / 'table.md'}")
    if not agree:
        raise SystemExit("error: the first losses differ by more than 2%: the runs did not train the same thing")


if __name__ == "__main__":
    sys.excepthook = report_user_errors
    main()

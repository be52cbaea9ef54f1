"""LoRA-tune an encoder-decoder (mt0, mT5, T5) on instructions: the prompt is the encoder's input, the reply the target.

What it trains: LoRA adapters (r=16, alpha 32, dropout 0.1, as the article) on q, k, v, o, wi and wo of every attention
and feed-forward block of bigscience/mt0-large (1.23B parameters, 18.3M of them LoRA; any T5/mT5/mt0/flan-t5 id or
local path), with transformers + PEFT (TaskType.SEQ_2_SEQ_LM) and Seq2SeqTrainer. Unsloth is not used: it accelerates
decoder-only models, not encoder-decoders. On mt0 (a gated mT5) "wi" is the pair wi_0, wi_1: see common/seq2seq.py.
On what: datasets/instructions (200 instruction/response records, Chinese and English: counselling and LoRA Q&A), or
any JSONL/JSON docs/data-formats.md lists; the encoder reads the system text, instruction and input, the decoder the
response.
Labels: the response and its </s>; -100 on every padded label position (checked in the preflight cell).
Defaults follow the article (a Chinese blog post: LoRA on mt0-large for youth counselling): batch 5, 4 epochs,
learning rate 9.65e-7, its recommended setting. That rate moves a LoRA adapter very little (B starts at zero);
1e-4 to 3e-4 is the usual LoRA range. --compare trains the article's three configurations and prints their table.
GPU memory: an estimate, not measured (nothing here has run on a GPU yet): about 8 GB in float32 at batch 5 with the
bundled short examples (weights 4.9 GB; LoRA, gradients and Adam 0.3 GB; logits over the 250K vocabulary, their
gradient and the activations about 2.5 GB), about 11 GB with targets near 256 tokens, and about 5 GB in bf16 on
Ampere or newer. A T4 trains in float32 (it fits): mT5 overflows in fp16, so fp16 is never used. --load-in-4bit
(QLoRA, asked for, never the default): weights about 2.9 GB, 2 GB less than float32 but no less than bf16 (2.7 GB):
only q, k, v, o and wi become nf4; the embedding, lm_head and wo stay float32 (see the config cell).

    python recipes/mt0_seq2seq.py                                   # mt0-large, GPU + internet
    python recipes/mt0_seq2seq.py --model tiny                      # offline random-weight mT5, CPU is fine
    python recipes/mt0_seq2seq.py --model tiny --compare --max-steps 40   # the article's three configurations
    python recipes/mt0_seq2seq.py --targets q,v --learning-rate 3e-4 --export adapter
    python recipes/mt0_seq2seq.py --model tiny --load-in-4bit       # QLoRA: bitsandbytes nf4, on a CPU too

Every config field below can be overridden with --field-name value; switches are --flag / --no-flag (--help lists them).
"""
# %% config
import common.startup  # noqa: F401  before torch loads: how long idle threads spin (common/startup.py)

import dataclasses
import gc
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import peft
import torch
from datasets import Dataset
from transformers import (AutoModelForSeq2SeqLM, AutoTokenizer, BitsAndBytesConfig, DataCollatorForSeq2Seq,
                          Seq2SeqTrainer, Seq2SeqTrainingArguments)

from common.config import AutoSwitch, parse_config
from common.data import held_out_overlap, load_conversations
from common.errors import UserError, report_user_errors
from common.export import check_export_request, export_run
from common.four_bit import unpacked_cpu_4bit
from common.hub import check_model_available
from common.lora import check_lora_options
from common.memory_plan import load_config
from common.preflight import seq2seq_preflight
from common.runs import finish_replacing, open_run_dir, plan_run_dir, save_run_config
from common.seq2seq import (compare_seq2seq_replies, padding_share, resolve_t5_targets, run_comparison, seq2seq_outline,
                            tokenize_pairs)
from common.tiny.seq2seq import tiny_seq2seq_path
from common.train_checks import (SAVE_TOTAL_LIMIT, Scheduler, check_disk_for_checkpoints, check_training_options,
                                 disk_full_is_an_error)
from common.train_log import StepTimer, save_loss_plot


@dataclass
class Config:
    model: str = "bigscience/mt0-large"  # hub id, local path, or "tiny" (offline random-weight mT5 test model)
    max_seq_length: int = 256  # inputs and targets each keep their first max_seq_length tokens (the article's 256)
    load_in_4bit: AutoSwitch = None  # --load-in-4bit: QLoRA, nf4 on q,k,v,o,wi (not wo, embeddings); unset: 16/32-bit
    # LoRA
    r: int = 16  # rank of the LoRA matrices
    lora_alpha: int = 32  # LoRA scale is lora_alpha / r
    lora_dropout: float = 0.1  # the article's 0.1
    bias: Literal["none", "all", "lora_only"] = "none"
    targets: str = "all-linear"  # all-linear (q,k,v,o,wi,wo: the article's list) | attention | mlp | names like q,v
    # data and labels
    train_file: str = "datasets/instructions/train.jsonl"  # .jsonl or .json
    eval_file: str = "datasets/instructions/test.jsonl"  # held-out records
    skip_bad_rows: bool = False  # skip and count bad rows instead of stopping at the first
    # training
    batch_size: int = 5  # per step, the article's 5; each batch is padded to its own longest example
    grad_accum: int = 1  # gradient accumulation: an optimizer step sees batch_size * grad_accum examples
    learning_rate: float | None = None  # unset: 9.65e-7, the article's recommended rate (tiny: 2e-3)
    num_train_epochs: float = 4.0
    max_steps: int = -1  # stop after this many optimizer steps (-1: run num_train_epochs)
    warmup_steps: int = 0
    lr_scheduler: Scheduler = "linear"  # linear: Seq2SeqTrainer's default, as the article
    optim: Literal["adamw_torch", "adamw_torch_fused", "adafactor", "adamw_8bit", "paged_adamw_8bit",
                   "paged_adamw_32bit"] = "adamw_torch"  # adafactor is T5's own; 8-bit ones need a GPU
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    group_by_length: bool = False  # batch examples of similar length: less padding
    save_steps: int = 40  # write a checkpoint every N optimizer steps (for --resume); 40 = one epoch here
    seed: int = 42
    # output
    output_dir: str = "runs/mt0_seq2seq"  # a run directory; an existing one is never overwritten
    resume: bool = False  # continue from the newest checkpoint in output_dir
    overwrite: bool = False  # replace the run in output_dir instead of writing to output_dir-2
    eval_prompts: int = 3  # held-out prompts answered by the base and the tuned model
    max_new_tokens: int = 64
    export: Literal["none", "adapter", "merged16", "gguf"] = "none"  # after saving (gguf: not for T5 yet)
    compare: bool = False  # train the article's three configurations, each in its own process; write compare.md


# The article's three experiments: few target modules, then all of them at its two learning rates.
EXPERIMENTS = [("few targets (q, v)", "q,v", 9.65e-6), ("all targets, lr 9.65e-6", "all-linear", 9.65e-6),
               ("all targets, lr 9.65e-7", "all-linear", 9.65e-7)]

sys.excepthook = report_user_errors  # bad data or config: a one-line error and exit code 2, no traceback
cfg = parse_config(Config, description=__doc__)
if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # accelerate launch / torchrun: only the text recipes take it
    raise UserError("this recipe trains on one GPU; for several: recipes/deepseek_multiturn.py or "
                    "recipes/llama_text.py (docs/multi-gpu.md)")
ROOT = Path(__file__).resolve().parent.parent if "__file__" in globals() else Path.cwd()


def data_path(name: str) -> Path:  # relative paths work from the project root or from where you run
    return Path(name) if Path(name).exists() or Path(name).is_absolute() else ROOT / name

if cfg.learning_rate is None:  # the article's rate; random weights need bigger steps to show the loss falling
    cfg.learning_rate = 2e-3 if cfg.model == "tiny" else 9.65e-7
    print(("tiny model: learning_rate 2e-3" if cfg.model == "tiny" else "learning_rate 9.65e-7, the article's")
          + " (set --learning-rate to choose another)")

# Every setting that can be checked without the model is checked here, before anything is downloaded.
check_training_options(learning_rate=cfg.learning_rate, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                       num_train_epochs=cfg.num_train_epochs, max_steps=cfg.max_steps, warmup_steps=cfg.warmup_steps,
                       weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, save_steps=cfg.save_steps,
                       max_seq_length=cfg.max_seq_length, eval_prompts=cfg.eval_prompts,
                       max_new_tokens=cfg.max_new_tokens)
check_lora_options(r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout)
if cfg.compare and cfg.resume:
    raise UserError("--compare trains three new runs; it cannot --resume one")
model_name = str(tiny_seq2seq_path()) if cfg.model == "tiny" else cfg.model
n_params, linear_layers = seq2seq_outline(model_name)  # config.json only: a wrong model or name fails in seconds
targets = resolve_t5_targets(cfg.targets, linear_layers)
if "wi_0" in targets and "wi_0" not in cfg.targets:
    print("targets: wi is wi_0 and wi_1 here (gated feed-forward, as on mt0); PEFT alone would match neither")
for _, names, _ in EXPERIMENTS if cfg.compare else ():
    resolve_t5_targets(names, linear_layers)
config = load_config(model_name)
check_export_request(cfg.export, ["f16"], config.model_type, config.architectures)
# Unset: no quantisation, as the article; mt0-large fits a T4 in float32. 4-bit makes only q, k, v, o, wi_0 and wi_1
# nf4 (47% of its parameters): the 250K-token embedding and lm_head (42%) and wo (11%: transformers keeps T5's wo in
# float32, its output overflows in 16-bit) stay unquantised, so the weights go from 4.9 GB to about 2.9 GB.
cfg.load_in_4bit = bool(cfg.load_in_4bit)  # run_config.json records what ran, not "unset"
run = plan_run_dir(cfg.output_dir, dataclasses.asdict(cfg), overwrite=cfg.overwrite, resume=cfg.resume)
on_gpu = torch.cuda.is_available()
if cfg.compare:  # each configuration in its own process, from the same freshly loaded base model
    for data_file in (cfg.train_file, cfg.eval_file):  # a bad row stops here, not three times over
        load_conversations(data_path(data_file), cfg.skip_bad_rows)
    run_dir = open_run_dir(run)
    save_run_config(cfg, run_dir)
    table = run_comparison(ROOT / "recipes" / "mt0_seq2seq.py", cfg, EXPERIMENTS, run_dir)
    finish_replacing(run)
    print(table + f"written to {run_dir / 'compare.md'}")
    raise SystemExit(0)


# %% load
# Read the data first: a bad file should fail in a second, not after a 5 GB download.
train_data = load_conversations(data_path(cfg.train_file), cfg.skip_bad_rows)
eval_data = load_conversations(data_path(cfg.eval_file), cfg.skip_bad_rows)
for name, loaded in (("train", train_data), ("eval", eval_data)):
    print(f"{name}: {len(loaded.conversations)} records" + (f", {len(loaded.skipped)} bad rows skipped"
                                                            if cfg.skip_bad_rows else ""))
    for err in loaded.skipped[:5]:
        print(f"  skipped {err}")
if overlap := held_out_overlap(train_data, eval_data):
    print(overlap)

# mT5 overflows in fp16 (inf and NaN losses), so a T4 or V100 trains in float32; bf16 on Ampere or newer
dtype = torch.bfloat16 if on_gpu and cfg.model != "tiny" and torch.cuda.is_bf16_supported() else torch.float32
check_model_available(model_name)  # a hub id must be cached or downloadable: offline, gated, mirror
print(f"loading {cfg.model}: {n_params / 1e6:,.0f}M parameters, dtype {str(dtype).removeprefix('torch.')}, "
      "transformers + PEFT (Unsloth does not accelerate encoder-decoders)")
print("path: " + ("4-bit QLoRA, bitsandbytes Linear4bit nf4 (double quantisation) on q, k, v, o, wi; wo float32 "
                  "(transformers keeps it so), embeddings and lm_head unquantised" if cfg.load_in_4bit else
                  f"{str(dtype).removeprefix('torch.')} LoRA, no quantisation") + (" on a GPU" if on_gpu else
                                                                                 " on the CPU"))
# QLoRA as in its paper, which shows NF4 with double quantisation matching bf16 on T5 models up to 11B.
quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=dtype) if cfg.load_in_4bit else None
model = AutoModelForSeq2SeqLM.from_pretrained(model_name, dtype=dtype, quantization_config=quantization,
                                              device_map={"": 0} if on_gpu else None)
tokenizer = AutoTokenizer.from_pretrained(model_name)
if cfg.load_in_4bit:  # freezes the base, upcasts its 16-bit tensors to float32, turns on gradient checkpointing
    model = peft.prepare_model_for_kbit_training(model, gradient_checkpointing_kwargs={"use_reentrant": False})
    # On a CPU with AVX512-BF16, bitsandbytes repacks a 4-bit weight for its inference kernel the first time the layer
    # runs in eval mode without gradients (the preflight below); that kernel has no backward, so no LoRA in the
    # encoder would learn. Keep them unpacked.
    unpacked_cpu_4bit(model)
print(f"base weights in memory: {model.get_memory_footprint() / 2**20:,.1f} MiB")
if on_gpu:
    gpu = torch.cuda.get_device_properties(0)
    print(f"GPU {gpu.name}, {gpu.total_memory / 2**30:.1f} GiB; after loading: "
          f"{torch.cuda.max_memory_reserved() / 2**30:.2f} GiB reserved")

# %% LoRA
model = peft.get_peft_model(model, peft.LoraConfig(
    task_type=peft.TaskType.SEQ_2_SEQ_LM, r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
    bias=cfg.bias, target_modules=targets))
lora_modules = {}
for name, module in model.named_modules():
    if isinstance(module, peft.tuners.lora.LoraLayer):
        lora_modules[name.rsplit(".", 1)[-1]] = lora_modules.get(name.rsplit(".", 1)[-1], 0) + 1
print(f"--targets {cfg.targets}: LoRA on " + ", ".join(f"{k} x{v}" for k, v in lora_modules.items()))
trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
model.print_trainable_parameters()

# %% data and labels
train_examples, train_stats = tokenize_pairs(tokenizer, train_data.conversations, cfg.max_seq_length)
eval_examples, eval_stats = tokenize_pairs(tokenizer, eval_data.conversations, cfg.max_seq_length)
for name, stats in (("train", train_stats), ("eval", eval_stats)):
    print(f"{name}: {stats['examples']} examples, mean {stats['mean_input_tokens']} input and "
          f"{stats['mean_target_tokens']} target tokens, {stats['truncated']} truncated to {cfg.max_seq_length}")
# Dynamic padding: each batch is padded to its own longest input and target, and the collator writes -100 into
# the padded label positions itself (label_pad_token_id), so the loss skips them. The article pads every example to
# max_length 256 and masks by token id: with examples this short, most of each batch is padding, and padding is
# still computed. (Masking by id would also mask </s> where pad is eos, as the article's fallback makes it.)
collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
fixed, dynamic = padding_share(train_examples, cfg.batch_size, cfg.max_seq_length)
print(f"padding: {fixed:.0%} of input and label positions if padded to {cfg.max_seq_length} as the article does, "
      f"{dynamic:.0%} with per-batch padding (batches of {cfg.batch_size} in file order)")

# %% preflight
print("preflight:")
seq2seq_preflight(model, tokenizer, collator, train_examples, cfg.batch_size)
check_disk_for_checkpoints(run.run_dir, trainable_params, cfg.optim)

# %% train
run_dir = open_run_dir(run)  # only now: nothing on disk changes until every check above has passed
save_run_config(cfg, run_dir)
step_timer = StepTimer()
# Seq2SeqTrainer, not TRL: TRL's SFTTrainer builds causal-LM batches (prompt and reply in one sequence); an
# encoder-decoder needs the prompt as encoder input and the reply as labels, which Seq2SeqTrainer takes as they are.
trainer = Seq2SeqTrainer(
    model=model,
    processing_class=tokenizer,
    data_collator=collator,
    train_dataset=Dataset.from_list(train_examples),
    eval_dataset=Dataset.from_list(eval_examples),
    args=Seq2SeqTrainingArguments(
        output_dir=str(run_dir),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        warmup_steps=cfg.warmup_steps,
        lr_scheduler_type=cfg.lr_scheduler,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        optim=cfg.optim if on_gpu or "8bit" not in cfg.optim else "adamw_torch",
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        bf16=dtype == torch.bfloat16,  # never fp16: mT5 overflows in it
        logging_steps=1,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=SAVE_TOTAL_LIMIT,
        seed=cfg.seed,
        include_num_input_tokens_seen="non_padding",
        report_to="none",
    ),
    callbacks=[step_timer],
)
if not on_gpu and "8bit" in cfg.optim:
    print(f"--optim {cfg.optim} needs a GPU (bitsandbytes): adamw_torch on this CPU")
reserved_before = torch.cuda.max_memory_reserved() / 2**30 if on_gpu else 0.0
start = time.time()
with disk_full_is_an_error(run_dir):
    trainer.train(resume_from_checkpoint=str(run.checkpoint) if run.checkpoint else None)
    seconds = time.time() - start
    # Saved before anything optional runs: an error in the evaluation below cannot lose the trained adapter.
    adapter_dir = run_dir / "adapter"
    model.save_pretrained(adapter_dir)  # LoRA weights and adapter_config.json only, not the base model
    tokenizer.save_pretrained(adapter_dir)
    (run_dir / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
finish_replacing(run)
losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
tokens = trainer.state.num_input_tokens_seen  # encoder input tokens, padding not counted
print(f"trained {trainer.state.global_step} steps in {seconds:.1f} s ({tokens / seconds:,.0f} input tokens/s); "
      f"loss {losses[0]:.4f} (first) -> {losses[-1]:.4f} (last)" if losses else "no step was logged")
training = {"steps": trainer.state.global_step, "seconds": round(seconds, 2),
            "median_step_seconds": step_timer.median(), "trainable_params": trainable_params,
            "lora_modules": list(lora_modules), "learning_rate": cfg.learning_rate,
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "peak_gpu_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2) if on_gpu else None}
if on_gpu:
    print(f"peak GPU memory: {training['peak_gpu_gib']:.2f} GiB reserved, "
          f"{training['peak_gpu_gib'] - reserved_before:.2f} of it for training")

# %% evaluate
metrics = trainer.evaluate()
with model.disable_adapter():  # the same held-out loss without LoRA: how far training moved the model
    metrics["base_eval_loss"] = trainer.evaluate(metric_key_prefix="base")["base_loss"]
print(f"held-out loss (target tokens only): {metrics['eval_loss']:.4f} tuned, {metrics['base_eval_loss']:.4f} base")
model.eval()
replies = compare_seq2seq_replies(model, tokenizer, eval_data.conversations[: cfg.eval_prompts], cfg.max_new_tokens,
                          cfg.max_seq_length)

# %% save
save_loss_plot(trainer.state.log_history, run_dir / "loss.png", title=cfg.model)
(run_dir / "eval.json").write_text(json.dumps({**metrics, "training": training, "replies": replies,
                                               "train": train_stats, "eval": eval_stats}, indent=1, ensure_ascii=False))
print(f"saved the adapter, tokenizer and run config to {run_dir}")

# %% export
if cfg.export != "none":
    if cfg.export == "merged16":
        del trainer, model  # free the GPU: merging loads the 16-bit base model
        gc.collect()
        torch.cuda.empty_cache()
    exported = export_run(run_dir, cfg.export, (), overwrite=cfg.overwrite)
    print(f"exported to {run_dir / 'export'}: "
          + ", ".join(sorted(k for k in exported if k not in ("modelfiles", "seconds", "parity"))))
else:
    print(f"to export later: python scripts/export.py {run_dir} --to adapter")

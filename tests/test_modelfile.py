"""Ollama TEMPLATEs for every chat family a recipe accepts, rendered by our Go-subset renderer (and by Go itself
when a Go toolchain is installed) and compared with the family's real chat template rendered by transformers'
own chat-template machinery, on the bundled held-out files, tests/data/adversarial.jsonl and the probes, with
and without a system prompt, multi-turn. Templates: tests/data/chat_templates/ (copied from the models' repos)."""
from datetime import datetime
from pathlib import Path

import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from common.chat_templates import DEEPSEEK_LLM_CHAT
from common.go_template import GoTemplateError, render
from common.modelfile import (NO_THINKING, PROBES, TRIMMED, checked_format, chat_family, go_render, ollama_format,
                              pinned_date, renderer, within_contract)
from conftest import ROOT
from go_render import go_binary, render_with_go

TEMPLATES = ROOT / "tests/data/chat_templates"
DEEPSEEK_SPECIAL = ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>")
LLAMA_SPECIAL = ("<|begin_of_text|>", "<|eot_id|>")
# model: (chat template, BOS, EOS, the family we detect, its end-of-turn stop)
MODELS = {
    "deepseek-llm-7b-chat": (DEEPSEEK_LLM_CHAT, *DEEPSEEK_SPECIAL, "deepseek-llm", "<｜end▁of▁sentence｜>"),
    "Llama-3.1-8B-Instruct": ("meta-llama-Llama-3.1-8B-Instruct.jinja", *LLAMA_SPECIAL, "llama3.1", "<|eot_id|>"),
    "Llama-3.2-3B-Instruct": ("meta-llama-Llama-3.2-3B-Instruct.jinja", *LLAMA_SPECIAL, "llama3.1", "<|eot_id|>"),
    # DeepSeek-R1-Distill-Llama-8B and -Qwen-1.5B ship the same chat template.
    "DeepSeek-R1-Distill": ("deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja", *DEEPSEEK_SPECIAL, "deepseek-r1",
                            "<｜end▁of▁sentence｜>"),
    "Qwen2.5-7B-Instruct": ("Qwen-Qwen2.5-7B-Instruct.jinja", None, "<|im_end|>", "qwen2.5", "<|im_end|>"),
    "Qwen3-0.6B": ("Qwen-Qwen3-0.6B.jinja", None, "<|im_end|>", "qwen3", "<|im_end|>"),
    "Phi-3.5-mini-instruct": ("microsoft-Phi-3.5-mini-instruct.jinja", "<s>", "<|endoftext|>", "phi-3", "<|end|>"),
}
TRAINED = datetime(2025, 3, 9, 14, 30)  # when the run's data was rendered, in these tests


class ChatTemplate:
    """The one part of a tokenizer the Modelfile code uses: apply_chat_template, here transformers' own
    rendering of a chat template with the model's BOS and EOS."""
    def __init__(self, template, bos_token, eos_token):
        self.chat_template, self.bos_token, self.eos_token = template, bos_token, eos_token

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False, **kwargs):
        assert not tokenize
        return render_jinja_template([messages], chat_template=self.chat_template, bos_token=self.bos_token,
                                     eos_token=self.eos_token, add_generation_prompt=add_generation_prompt,
                                     **kwargs)[0][0]


def template_of(model: str) -> str:
    source = MODELS[model][0]
    return source if source.endswith("%}") or "{{" in source else (TEMPLATES / source).read_text(encoding="utf-8")


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


def expected_rendering(model: str, messages, date_string=None) -> str:
    template, bos, eos = MODELS[model][:3]
    kwargs = {"date_string": date_string} if date_string else {}
    text = ChatTemplate(template_of(model), bos, eos).apply_chat_template(messages, add_generation_prompt=True,
                                                                          **kwargs)
    assert not bos or text.startswith(bos) or "bos_token" not in template_of(model)
    return text[len(bos):] if bos and text.startswith(bos) else text  # Ollama adds the BOS token itself


@pytest.mark.parametrize("model", MODELS)
def test_template_renders_exactly_what_the_chat_template_renders(model):
    template, bos, eos, family, end_of_turn = MODELS[model]
    chat_template = template_of(model)
    assert chat_family(chat_template) == family
    date_string = pinned_date(chat_template, {}, TRAINED)
    fmt = ollama_format(family, renderer(ChatTemplate(chat_template, bos, eos), date_string))
    assert end_of_turn in fmt.stops
    cases = [c for c in conversations() if within_contract(fmt, c)]
    assert len(cases) >= 180, len(cases)  # 104 conversations, most also with a system prompt, and the probes
    assert sum(len(c) > 2 for c in cases) > 40 and sum(c[0]["role"] == "system" for c in cases) > 80
    expected = [expected_rendering(model, c, date_string) for c in cases]
    for messages, text in zip(cases, expected):
        assert go_render(fmt.template, messages) == text, messages
    if go_binary():  # Go's own text/template, set up as Ollama sets it up
        assert render_with_go([(fmt.template, c) for c in cases]) == expected


def test_llama_3_1_and_3_2_templates_carry_the_date_block_training_rendered():
    """Both templates open every conversation with a system block holding the dates. 3.1 writes a fixed date;
    3.2 asks strftime_now, which transformers fills with the day it renders: the day the run rendered its data,
    which the TEMPLATE writes, so Ollama's prompts read like the training data."""
    for model, date in (("Llama-3.1-8B-Instruct", "26 Jul 2024"), ("Llama-3.2-3B-Instruct", "09 Mar 2025")):
        chat_template = template_of(model)
        date_string = pinned_date(chat_template, {}, TRAINED)
        fmt = ollama_format("llama3.1", renderer(ChatTemplate(chat_template, *LLAMA_SPECIAL), date_string))
        text = go_render(fmt.template, [{"role": "user", "content": "Hi"}])
        assert text.startswith("<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December "
                               f"2023\nToday Date: {date}\n\n<|eot_id|><|start_header_id|>user"), text
    # Training renders 3.2 with no date_string: transformers' strftime_now, the clock. The TEMPLATE for a run
    # rendered today is exactly that rendering; a recipe that saves date_string in run_config.json pins it.
    chat_template = template_of("Llama-3.2-3B-Instruct")
    today = pinned_date(chat_template, {}, datetime.now())
    fmt = ollama_format("llama3.1", renderer(ChatTemplate(chat_template, *LLAMA_SPECIAL), today))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert go_render(fmt.template, messages) == expected_rendering("Llama-3.2-3B-Instruct", messages)
    assert pinned_date(chat_template, {"date_string": "01 Jan 2026"}, TRAINED) == "01 Jan 2026"
    assert pinned_date(template_of("Llama-3.1-8B-Instruct"), {}, TRAINED) is None


def test_what_a_go_template_cannot_do_is_stated_and_the_stated_fix_is_exact():
    """Llama trims each message and R1 drops an earlier reply's reasoning before </think>: a Go template can do
    neither, so the Modelfile says what to send; sending that renders exactly."""
    llama = MODELS["Llama-3.1-8B-Instruct"]
    fmt = ollama_format("llama3.1", renderer(ChatTemplate(template_of("Llama-3.1-8B-Instruct"), *llama[1:3]), None))
    spaced = [{"role": "user", "content": "  spaced  \n"}]
    assert fmt.contract == TRIMMED and not within_contract(fmt, spaced)
    assert go_render(fmt.template, spaced) != expected_rendering("Llama-3.1-8B-Instruct", spaced)
    trimmed = [{"role": "user", "content": "spaced"}]
    assert go_render(fmt.template, trimmed) == expected_rendering("Llama-3.1-8B-Instruct", spaced)

    r1 = MODELS["DeepSeek-R1-Distill"]
    fmt = ollama_format("deepseek-r1", renderer(ChatTemplate(template_of("DeepSeek-R1-Distill"), *r1[1:3]), None))
    history = [{"role": "user", "content": "1+1?"},
               {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n2"}, {"role": "user", "content": "2+2?"}]
    assert fmt.contract == NO_THINKING and not within_contract(fmt, history)
    answer_only = [history[0], {"role": "assistant", "content": "\n\n2"}, history[2]]
    assert go_render(fmt.template, answer_only) == expected_rendering("DeepSeek-R1-Distill", history)


def test_unknown_or_changed_template_gets_no_template_and_a_warning_naming_it():
    fmt, note = checked_format(ChatTemplate("{{ messages[0]['content'] }}", None, None),
                               "{{ messages[0]['content'] }}", None, [])
    assert fmt is None and note.startswith("unknown chat format: no TEMPLATE written")
    # A DeepSeek-LLM template someone edited (one newline after a user turn, not two): same markers, other text.
    edited = DEEPSEEK_LLM_CHAT.replace("message['content'] + '\n\n' }}{% elif message['role'] == 'assistant'",
                                       "message['content'] + '\n' }}{% elif message['role'] == 'assistant'")
    assert edited != DEEPSEEK_LLM_CHAT and chat_family(edited) == "deepseek-llm"
    fmt, note = checked_format(ChatTemplate(edited, *DEEPSEEK_SPECIAL), edited, None, [])
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


def test_go_subset_renderer_refuses_what_it_does_not_know():
    for template in ('{{ printf "%d" 1 }}', '{{ template "x" }}', "{{ if .Messages }}", "{{ .Missing }}"):
        with pytest.raises(GoTemplateError):
            render(template, {"Messages": []})


# The same families through their real tokenizers (common/real_tokenizers.py): the chat template the hub repo
# ships, rendered by the tokenizer's own apply_chat_template, as training renders it.
REAL_FAMILIES = {
    "deepseek-llm-7b-chat": "deepseek-llm", "llama-3.1-8b-instruct": "llama3.1", "llama-3.2-3b-instruct": "llama3.1",
    "deepseek-r1-distill-llama-8b": "deepseek-r1", "deepseek-r1-distill-qwen-1.5b": "deepseek-r1",
    "qwen2.5-7b-instruct": "qwen2.5", "qwen3-0.6b": "qwen3", "phi-3.5-mini-instruct": "phi-3",
}


@pytest.mark.parametrize("family", REAL_FAMILIES)
def test_real_tokenizer_gets_a_checked_template_and_stops_on_every_end_of_turn_token(family):
    import json

    from transformers import AutoTokenizer

    from common.real_tokenizers import tokenizer_dir

    directory = tokenizer_dir(family)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    template = tokenizer.chat_template
    assert chat_family(template) == REAL_FAMILIES[family]
    fmt, note = checked_format(tokenizer, template, pinned_date(template, {}, TRAINED), conversations())
    assert fmt is not None, note
    # Every token the model ends a turn with (generation_config's eos ids, else the tokenizer's EOS) stops Ollama,
    # and every stop written as a special token is one token of this vocabulary.
    generation = directory / "generation_config.json"
    eos = json.loads(generation.read_text())["eos_token_id"] if generation.exists() else tokenizer.eos_token_id
    for token_id in eos if isinstance(eos, list) else [eos]:
        assert tokenizer.convert_ids_to_tokens(token_id) in fmt.stops, (token_id, fmt.stops)
    for stop in fmt.stops:
        if stop.startswith("<") and stop.endswith(">"):
            assert len(tokenizer(stop, add_special_tokens=False)["input_ids"]) == 1, stop

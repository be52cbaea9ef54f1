"""Random-weight models of the real shapes, with the real tokenizers, built locally for dev/gpu_check.

    random_text_model("llama-3.1-8b")        # benchmarks/configs/llama-3.1-8b.json + Llama-3.1-8B-Instruct's tokenizer
    random_vision_model()                    # Llama-3.2-11B-Vision: real config, real Llama-3 vocab + <|image|>, 560 px
    quantized_copy(random_text_model(...))   # the same weights stored in 4-bit, as NAME-bnb-4bit (GPU only)

Speed and memory depend on shapes, not on trained weights, so a model is built from its bundled config
(benchmarks/configs/ARCH.json, the real config.json values) with random bf16 weights (seed 0) and saved once;
a recipe then loads it in 4-bit through bitsandbytes on the fly, as Unsloth does with load_in_4bit=True on a
16-bit checkpoint. The tokenizer files come from fixtures/tokenizers (dev/real_tokenizers.py), so the
recipes tokenize, label and template exactly as with the real model. Nothing is downloaded.

Each model is written under a temporary name and renamed when complete, in cache_root() (TINY_MODEL_CACHE moves
it): `random-ARCH-FAMILY`. An 8B model is 16 GB on disk, the 11B vision model 21 GB; remove() deletes one. Its
random_model.json holds the cache_key() of everything that shaped it (this file, the config, the tokenizer's
fixtures, the chat template, the device); a model found with another key is deleted and built again, under the same
name, so a stale copy is never used and never left taking the disk.
"""
import json
import shutil
from pathlib import Path

from dev.real_tokenizers import family_key, tokenizer_dir
from common.tiny.cache import build_once, cache_key, cache_root

BUILDER_VERSION = "1"  # bump when anything below changes what gets built
CONFIGS = Path(__file__).resolve().parent.parent / "benchmarks" / "configs"
# arch (benchmarks/configs/ARCH.json) -> the fixtures/tokenizers family of its real tokenizer
TEXT_FAMILIES = {
    "deepseek-llm-7b": "deepseek-llm-7b-chat",
    "llama-3.1-8b": "llama-3.1-8b-instruct",
    "llama-3.2-3b": "llama-3.2-3b-instruct",
    "deepseek-r1-distill-qwen-1.5b": "deepseek-r1-distill-qwen-1.5b",
}
VISION_ARCH, VISION_FAMILY = "llama-3.2-11b-vision", "llama-3.1-8b-instruct"  # the 11B Vision uses Llama 3.1's vocab
IMAGE_TOKEN, IMAGE_TOKEN_ID = "<|image|>", 128256  # added after the 128,256 text tokens, as the real model has it
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json")


def _key_of(directory: Path) -> str | None:
    """The key a model was built with; None if there is no complete build (random_model.json is written last)."""
    stamp = directory / "random_model.json"
    return json.loads(stamp.read_text()).get("key") if stamp.is_file() else None


def _build(directory: Path, key: str, build) -> Path:
    """build_once, with random_model.json written last (the key it was built with). A model built here from other
    inputs (another key in its random_model.json) is deleted first."""
    if _key_of(directory) == key:
        return directory
    if (directory / "random_model.json").is_file():  # stale: built here before an input changed
        shutil.rmtree(directory, ignore_errors=True)

    def build_and_stamp(staging: Path):
        build(staging)
        (staging / "random_model.json").write_text(json.dumps({"builder": BUILDER_VERSION, "key": key,
                                                               "random_weights": True, "seed": 0}) + "\n")

    return build_once(directory, build_and_stamp)


def _random_weights(auto_class, config, device: str):
    """A model of `config` with random bf16 weights (seed 0); initialised on `device` (seconds on a GPU, minutes for
    an 8B model on a CPU) and returned there."""
    import torch

    torch.manual_seed(0)
    if device == "cuda":
        torch.cuda.manual_seed_all(0)
    with torch.device(device):
        return auto_class.from_config(config, dtype=torch.bfloat16)


def random_text_model(arch: str, cache_dir=None, device: str | None = None) -> Path:
    """benchmarks/configs/ARCH.json with random bf16 weights and its family's real tokenizer, built once."""
    if arch not in TEXT_FAMILIES:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(TEXT_FAMILIES)}")
    import torch

    family = TEXT_FAMILIES[arch]
    directory = cache_root(cache_dir) / f"random-{arch}-{family}"
    on = device or ("cuda" if torch.cuda.is_available() else "cpu")  # the random weights differ between devices
    key = cache_key(BUILDER_VERSION, arch, on, family_key(family), files=[__file__, CONFIGS / f"{arch}.json"])

    def build(staging: Path):
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(str(CONFIGS / f"{arch}.json"))
        model = _random_weights(AutoModelForCausalLM, config, on)
        model.save_pretrained(staging, max_shard_size="5GB")
        del model
        source = tokenizer_dir(family, cache_dir)
        for name in TOKENIZER_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, staging / name)

    return _build(directory, key, build)


def vision_processor(cache_dir=None):
    """Llama-3.2-11B-Vision-Instruct's processor, rebuilt offline: the real Llama-3.1 vocabulary with <|image|> added
    as id 128256, MllamaImageProcessor with the real model's settings (560-pixel tiles, up to 4 per image, CLIP
    mean and std, bilinear resizing) and the Llama-3.2-Vision chat template of common/tiny/vision.py."""
    from transformers import AutoTokenizer, MllamaImageProcessor, MllamaProcessor
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    from common.tiny.vision import LLAMA32_VISION_TEMPLATE

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(VISION_FAMILY, cache_dir))
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) != IMAGE_TOKEN_ID:
        raise RuntimeError(f"{IMAGE_TOKEN} got id {tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)}, not {IMAGE_TOKEN_ID}")
    tokenizer.chat_template = LLAMA32_VISION_TEMPLATE
    image_processor = MllamaImageProcessor(do_convert_rgb=True, do_resize=True, size={"height": 560, "width": 560},
                                           resample=2, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                                           image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD),
                                           do_pad=True, max_image_tiles=4)
    return MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=LLAMA32_VISION_TEMPLATE)


def random_vision_model(cache_dir=None, device: str | None = None) -> Path:
    """Llama-3.2-11B-Vision (benchmarks/configs/llama-3.2-11b-vision.json) with random bf16 weights and
    vision_processor(), built once."""
    import torch

    from common.tiny.vision import LLAMA32_VISION_TEMPLATE

    directory = cache_root(cache_dir) / f"random-{VISION_ARCH}"
    on = device or ("cuda" if torch.cuda.is_available() else "cpu")  # the random weights differ between devices
    key = cache_key(BUILDER_VERSION, VISION_ARCH, on, family_key(VISION_FAMILY), LLAMA32_VISION_TEMPLATE,
                    files=[__file__, CONFIGS / f"{VISION_ARCH}.json"])

    def build(staging: Path):
        from transformers import AutoConfig, AutoModelForImageTextToText

        processor = vision_processor(cache_dir)
        config = AutoConfig.from_pretrained(str(CONFIGS / f"{VISION_ARCH}.json"))
        if config.image_token_index != IMAGE_TOKEN_ID:
            raise RuntimeError(f"{VISION_ARCH}.json: image_token_index {config.image_token_index}, "
                               f"not {IMAGE_TOKEN_ID}")
        model = _random_weights(AutoModelForImageTextToText, config, on)
        model.save_pretrained(staging, max_shard_size="5GB")
        del model
        processor.save_pretrained(staging)
        source = tokenizer_dir(VISION_FAMILY, cache_dir) / "generation_config.json"
        if source.is_file():
            shutil.copyfile(source, staging / "generation_config.json")

    return _build(directory, key, build)


def quantized_copy(model_dir) -> Path:
    """MODEL_DIR-bnb-4bit beside model_dir: the same weights stored in 4-bit nf4 with double quantisation, as the
    `unsloth/NAME-bnb-4bit` checkpoints are, so a run trained on it exports into its 16-bit twin found from the name
    (common/export/run.py). Needs a GPU (bitsandbytes quantises on CUDA)."""
    from importlib.metadata import version

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig

    model_dir = Path(model_dir)
    directory = model_dir.parent / f"{model_dir.name}-bnb-4bit"
    if not torch.cuda.is_available():
        raise RuntimeError("a 4-bit copy needs a GPU (bitsandbytes quantises on CUDA)")
    key = cache_key(BUILDER_VERSION, _key_of(model_dir), version("bitsandbytes"), files=[__file__])

    def build(staging: Path):
        dtype = getattr(AutoConfig.from_pretrained(model_dir), "dtype", None) or torch.bfloat16
        dtype = getattr(torch, dtype.removeprefix("torch.")) if isinstance(dtype, str) else dtype
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=dtype)
        model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quant, dtype=dtype,
                                                     device_map={"": 0})
        model.save_pretrained(staging)
        del model
        for name in (*TOKENIZER_FILES, "random_model.json"):
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, staging / name)

    return _build(directory, key, build)


def remove(directory) -> None:
    """Delete a built model (the checks free disk space between models this way)."""
    shutil.rmtree(directory, ignore_errors=True)

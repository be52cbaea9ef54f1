"""Is an export request possible? Checked from the names alone, so a recipe can refuse it in its config cell,
before any download or training, and export_run refuses the same things before merging:

    check_export_request(cfg.export, cfg.export_quants, config.model_type, config.architectures)
"""
import importlib.util

from common.errors import UserError
from common.export.gguf import QUANTS

TARGETS = ("adapter", "merged16", "gguf")
FOUR_BIT_MERGE = ("the merge is 16-bit by design: a LoRA merged into 4-bit weights is rounded back onto the 4-bit "
                  "grid, which loses much of what it learned (the update is far smaller than a 4-bit step). Export "
                  "merged16 for transformers or vLLM (load it with load_in_4bit=True to run it in 4-bit), or --to "
                  "gguf --quant q4_k_m for a 4-bit file that llama.cpp and Ollama run")


def export_target(to: str) -> str:
    """scripts/export.py's --to: a 4-bit merge (merged4bit, merged_4bit, ...) gets the reason, in one line."""
    if "4" in to and to not in TARGETS:
        raise UserError(f"--to {to}: {FOUR_BIT_MERGE}")
    return to
# llama.cpp's converter writes T5-family GGUFs and llama.cpp loads them, but llama-cpp-python's Llama class (its
# completion and chat API, our load check and --verify) never runs the encoder (llama_encode), so every use of
# such a file aborts on "llama_encode must be called first": measured with llama-cpp-python 0.3.36.
ENCODER_DECODER_GGUF = ("llama-cpp-python cannot run encoder-decoder GGUFs (its Llama class never calls "
                        "llama_encode, and a forward pass aborts)")


def parse_quants(quants) -> list[str]:
    names = [q.strip().lower() for q in (quants.split(",") if isinstance(quants, str) else quants) if q.strip()]
    unknown = [q for q in names if q not in QUANTS]
    if unknown or not names:
        raise UserError(f"--quant {','.join(unknown) or '(none)'}: choose from {', '.join(QUANTS)}")
    return list(dict.fromkeys(names))


def is_encoder_decoder_type(model_type: str) -> bool:
    """From the model type alone (t5, mt5, umt5, bart, ...): the default config of that type says."""
    from transformers import AutoConfig
    try:
        return bool(AutoConfig.for_model(model_type).is_encoder_decoder)
    except ValueError:  # a model type transformers does not know: nothing to say about it here
        return False


def refuse_gguf(model_type: str, architectures: list[str] | None, name: str, encoder_decoder: bool | None = None):
    """Raise when `name` (a model of this type and architectures) cannot become a GGUF that llama.cpp runs."""
    if model_type == "mllama":
        raise UserError(f"{name} is a vision model (mllama, Llama 3.2 Vision): llama.cpp has no Mllama support, so "
                        "it cannot become a GGUF; export it with --to merged16 (loads in transformers and vLLM)")
    if encoder_decoder if encoder_decoder is not None else is_encoder_decoder_type(model_type):
        raise UserError(f"{name} is an encoder-decoder model ({model_type}): {ENCODER_DECODER_GGUF}; export it "
                        "with --to merged16 (AutoModelForSeq2SeqLM loads it) or --to adapter")
    try:
        from conversion import TEXT_MODEL_MAP  # llama.cpp's converter: the architectures it converts
        if importlib.util.find_spec("llama_cpp") is None:  # the quantizer and the load check
            raise ImportError("llama_cpp")
    except ImportError:
        raise UserError("GGUF export needs llama.cpp's converter and llama-cpp-python: pip install -e '.[export]' "
                        "(scripts/setup.sh does it)") from None
    unsupported = [a for a in architectures or [] if a not in TEXT_MODEL_MAP]
    if architectures and len(unsupported) == len(architectures):
        raise UserError(f"{name} ({', '.join(architectures)}) is an architecture llama.cpp's converter does not "
                        "convert, so it cannot become a GGUF; export it with --to merged16 or --to adapter")


def check_export_request(to: str, quants, model_type: str, architectures: list[str] | None = None) -> list[str]:
    """Refuse an export that cannot be made; returns the GGUF types to make ([] when not GGUF).

    to            none | adapter | merged16 | gguf (a recipe's `export` field; "none" exports nothing)
    quants        "f16,q4_k_m" or a list; only read for gguf
    model_type    config.model_type of the model to train (llama, qwen2, mllama, t5, ...)
    architectures config.architectures, checked against llama.cpp's converter when given"""
    if to == "none":
        return []
    if to not in TARGETS:
        raise UserError(f"export {to!r}: choose one of none, {', '.join(TARGETS)}")
    if to != "gguf":
        return []
    try:  # the model first: no quant would help; said with the recipe's flags (--export, --export-quants)
        refuse_gguf(model_type, architectures, f"a {model_type} model")
        return parse_quants(quants)
    except UserError as err:
        message = str(err).replace("--to ", "--export ").replace("--quant ", "--export-quants ")
        raise UserError(f"--export gguf: {message}") from None

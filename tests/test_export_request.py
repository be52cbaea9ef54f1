"""check_export_request: what a recipe calls in its config cell, before any model loads."""
import pytest

from common.errors import UserError
from common.export.request import check_export_request


def test_possible_requests_pass_and_return_the_gguf_types():
    assert check_export_request("none", "nonsense", "mllama") == []
    assert check_export_request("adapter", "nonsense", "t5") == []
    assert check_export_request("merged16", "", "mllama") == []
    assert check_export_request("gguf", "q4_k_m,F16,q4_k_m", "llama", ["LlamaForCausalLM"]) == ["q4_k_m", "f16"]
    assert check_export_request("gguf", ["q8_0"], "qwen2", ["Qwen2ForCausalLM"]) == ["q8_0"]


@pytest.mark.parametrize("to,quants,model_type,architectures,message", [
    ("ggml", "f16", "llama", None, "export 'ggml': choose one of none, adapter, merged16, gguf"),
    ("gguf", "q5_k_s", "llama", None, "--export gguf: --export-quants q5_k_s: choose from f16, q8_0, q4_k_m"),
    ("gguf", "", "llama", None, "--export-quants (none): choose from f16, q8_0, q4_k_m"),
    ("gguf", "f16", "mllama", ["MllamaForConditionalGeneration"], "llama.cpp has no Mllama support"),
    ("gguf", "f16", "t5", ["T5ForConditionalGeneration"], "is an encoder-decoder model (t5)"),
    ("gguf", "f16", "t5", None, "export it with --export merged16"),  # the recipe's flag, not scripts/export.py's
    ("gguf", "f16", "mt5", None, "is an encoder-decoder model (mt5)"),
    ("gguf", "f16", "whisper", ["WhisperForConditionalGeneration"], "encoder-decoder"),
    ("gguf", "f16", "made_up", ["MadeUpForCausalLM"], "an architecture llama.cpp's converter does not convert"),
])
def test_impossible_requests_are_refused_with_the_choices(to, quants, model_type, architectures, message):
    with pytest.raises(UserError) as refused:
        check_export_request(to, quants, model_type, architectures)
    assert message in str(refused.value) and "\n" not in str(refused.value)

"""Encoder-decoder runs (T5, mT5, mt0 with PEFT): --to adapter and --to merged16 work, --to gguf is refused in one
line. A tiny random T5 is built here, with a SentencePiece unigram tokenizer trained on the bundled data."""
import io
import json
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from test_export import export
from test_export_source import refused


def tiny_t5(directory: Path) -> Path:
    import sentencepiece as spm
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    directory.mkdir(parents=True)
    texts = [m["content"] for line in (ROOT / "datasets/chat_multiturn/train.jsonl").read_text().splitlines()
             for m in json.loads(line)["messages"]]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=model, model_type="unigram",
                                   vocab_size=2000, hard_vocab_limit=False, character_coverage=0.9995,
                                   pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1, minloglevel=2)
    (directory / "spiece.model").write_bytes(model.getvalue())
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "T5Tokenizer", "extra_ids": 0, "eos_token": "</s>", "pad_token": "<pad>",
        "unk_token": "<unk>"}))
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.save_pretrained(directory)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                      num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
                      feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def t5_run(tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    root = tmp_path_factory.mktemp("t5")
    base = tiny_t5(root / "base")
    model = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q", "v"], task_type="SEQ_2_SEQ_LM"))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    run_dir = root / "tiny-mt0"
    model.save_pretrained(run_dir / "adapter")
    AutoTokenizer.from_pretrained(base).save_pretrained(run_dir / "adapter")
    (run_dir / "run_config.json").write_text(json.dumps({"model": str(base)}) + "\n")
    return run_dir


def test_seq2seq_adapter_and_merged16_export(t5_run):
    from peft import PeftModel
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    export(t5_run, "--to", "adapter")
    assert (t5_run / "export/adapter/adapter_model.safetensors").read_bytes() == \
        (t5_run / "adapter/adapter_model.safetensors").read_bytes()
    stdout = export(t5_run, "--to", "merged16")
    assert "merged16:" in stdout and "loads back in transformers" in stdout
    merged = t5_run / "export" / "merged16"
    tokenizer = AutoTokenizer.from_pretrained(merged)
    inputs = tokenizer(["考试前睡不着怎么办？ What helps?"], return_tensors="pt")
    decoder_ids = torch.tensor([[0, 5, 9, 11]])
    merged_model = AutoModelForSeq2SeqLM.from_pretrained(merged)
    # T5-family activations overflow float16, so the merged copy stays float32 (see common/export/merge.py)
    assert type(merged_model).__name__ == "T5ForConditionalGeneration" and merged_model.dtype == torch.float32
    base = json.loads((t5_run / "adapter/adapter_config.json").read_text())["base_model_name_or_path"]
    with torch.no_grad():
        adapter_logits = PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(base), t5_run / "adapter")(
            **inputs, decoder_input_ids=decoder_ids).logits
        base_logits = AutoModelForSeq2SeqLM.from_pretrained(base)(**inputs, decoder_input_ids=decoder_ids).logits
        merged_logits = merged_model.float()(**inputs, decoder_input_ids=decoder_ids).logits
    assert torch.allclose(merged_logits, adapter_logits, atol=2e-2, rtol=1e-2), \
        (merged_logits - adapter_logits).abs().max()
    assert (adapter_logits - base_logits).abs().max() > 0.01  # the adapter really changes the model


def test_seq2seq_gguf_is_refused_in_one_line(t5_run, tmp_path):
    message = refused(t5_run, "--to", "gguf", "--out", tmp_path / "out")
    assert "is an encoder-decoder model (t5)" in message and "llama_encode" in message
    assert "--to merged16" in message
    assert not (tmp_path / "out").exists()

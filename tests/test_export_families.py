"""End to end on the real tokenizers (common/real_tokenizers.py, tiny random weights of each family's real
architecture): --to gguf passes its load check, and what Ollama feeds the model (the Modelfile's TEMPLATE, rendered
by Go's rules and tokenized by llama.cpp from the GGUF, BOS as the GGUF says) is token for token what training fed
it (the chat template rendered and tokenized by transformers)."""
import json
import re
from pathlib import Path

import pytest
import torch

from test_export import export

FAMILIES = [
    "llama-3.1-8b-instruct",          # the fixed-date system block
    "llama-3.2-3b-instruct",          # tied embeddings, the date of the day
    "qwen2.5-7b-instruct",            # no BOS, a default system prompt
    "deepseek-r1-distill-qwen-1.5b",  # qwen2 architecture with DeepSeek's tokens
    "deepseek-llm-7b-chat",           # transformers#45488: AutoTokenizer gets it wrong, the export must not
    "deepseek-r1-distill-llama-8b",   # the same bug, loaded from a folder
]


def family_run(run_dir: Path, family: str) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from common.real_tokenizers import tiny_model_dir
    from common.tokenizer import load_tokenizer, save_tokenizer

    base = tiny_model_dir(family)
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.save_pretrained(run_dir / "adapter")
    save_tokenizer(load_tokenizer(base), run_dir / "adapter")  # as the recipes save it
    (run_dir / "run_config.json").write_text(json.dumps({"eval_file": "datasets/chat_multiturn/test.jsonl"}) + "\n")
    return run_dir


@pytest.mark.parametrize("family", FAMILIES)
def test_ollama_feeds_the_gguf_the_ids_training_used(family, tmp_path):
    from datetime import datetime

    from llama_cpp import Llama

    from common.tokenizer import load_tokenizer

    from common.export import conversations_of
    from common.modelfile import PROBES, go_render, pinned_date
    from conftest import ROOT

    run_dir = family_run(tmp_path / family, family)
    stdout = export(run_dir, "--to", "gguf", "--quant", "f16")
    assert "llama.cpp loads it and runs a prompt" in stdout
    gguf = run_dir / "export" / "gguf" / f"{family}-f16.gguf"
    modelfile = gguf.with_suffix(".Modelfile").read_text(encoding="utf-8")
    template = re.search(r'^TEMPLATE """(.*?)"""$', modelfile, re.S | re.M).group(1)

    tokenizer = load_tokenizer(run_dir / "adapter")
    date = pinned_date(tokenizer.chat_template, {},
                       datetime.fromtimestamp((run_dir / "run_config.json").stat().st_mtime))
    kwargs = {"date_string": date} if date else {}
    llm = Llama(str(gguf), vocab_only=True, verbose=False)
    conversations = [c for c in conversations_of(ROOT / "datasets/chat_multiturn/test.jsonl", 8) + PROBES
                     if all(m["content"] == m["content"].strip() for m in c)]  # Llama's trim: see the Modelfile
    for messages in conversations:
        trained = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                          **kwargs), add_special_tokens=False)["input_ids"]
        # add_bos=True adds the BOS only where the GGUF says to (tokenizer.ggml.add_bos_token), as Ollama does.
        fed = llm.tokenize(go_render(template, messages).encode("utf-8"), add_bos=True, special=True)
        assert fed == trained, messages
    llm.close()

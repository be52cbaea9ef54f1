"""Parts 1 and 2: a recipe end to end, through dev/recipe_probe.py (T4 mode too), and its row: the loss, 4-bit,
tokens/s, the memory against the planner, padding-free batches, the labels, the saved adapter and its reloads, and in
T4 mode fp16, the planner's verdict and the README's claim."""
import math
import shutil
from pathlib import Path

from dev.gpu_check.context import Context, item, load_json, status_of, tail
from dev.gpu_check.data import data_files
from dev.gpu_check.plan import MODELS, T4_CLAIMS, Check

SHAPES = {}  # model -> its Shape (counted once on the meta device: seconds for an 11B model)


def plan_for(model: str, seq: int, batch: int, r: int, four_bit: bool, gpu: str, images: int):
    from common.memory_plan import model_shape_of, plan_memory
    if model not in SHAPES:
        SHAPES[model] = model_shape_of(model)
    return plan_memory(model, gpu=gpu, seq=max(1, seq), r=r, batch=max(1, batch), load_in_4bit=four_bit,
                       images=images, shape=SHAPES[model])


def t4_planner_rows(ctx: Context, check: Check) -> dict:
    """On a CPU: the planner's T4 verdict for the real shape at the recipe's defaults; the run itself needs a GPU."""
    o = check.options
    arch = MODELS[check.model][0]
    plan = plan_for(arch, 2048, 2, 16, True, "t4", 1 if o.get("vision") else 0)
    claim, _, _ = T4_CLAIMS[o["claim"]]
    verdict = "fits" if plan.fits else "DOES NOT FIT"
    items = [item("planner (T4)", None, f"{arch} at the recipe's defaults (4-bit, r=16, batch 2 x 2,048): predicted "
                                        f"{plan.need_gib:.2f} GiB with the CUDA context, {verdict} "
                                        f"{plan.gpu_gib:.2f} GiB"),
             item("outcome", None, "not applicable on CPU: T4 mode (fp16, the capped allocator) needs a GPU"),
             item("README claim", None, f"{claim}: not measured on CPU")]
    return {"status": "n/a", "items": items, "metrics": {"plan_t4_need_gib": plan.need_gib, "plan_t4_fits": plan.fits}}


def recipe_args(ctx: Context, check: Check, model: str, clear: bool = True) -> tuple[list, int, int, int]:
    o = check.options
    t4 = o.get("t4", False)
    max_seq = 256 if ctx.cpu else 2048
    batch = 2
    if clear:
        shutil.rmtree(ctx.work / "runs" / check.id, ignore_errors=True)  # no earlier run's files read as this one's
    args = ["--model", model, "--output-dir", ctx.work / "runs" / check.id, "--overwrite", "--save-steps", "100000",
            "--eval-prompts", "1", "--max-new-tokens", "4" if ctx.cpu else "16"]
    if not t4:  # 4-bit on a CPU too (bitsandbytes' CPU backend); T4 mode keeps the defaults (4-bit on a GPU)
        args += ["--load-in-4bit"]
    if ctx.cpu:
        args += ["--max-steps", ctx.steps, "--batch-size", batch, "--grad-accum", "1", "--max-seq-length", max_seq,
                 "--warmup-steps", "0"]
    elif t4:  # the recipe's defaults: batch 2 x 4, 2,048 tokens, r=16, its learning rate; only fewer steps
        args += ["--max-steps", ctx.t4_steps]
    else:  # random weights learn slowly at 2e-4: a larger step shows the loss falling within 20 steps
        args += ["--max-steps", ctx.steps, "--learning-rate", "1e-3"]
    for flag, path in data_files(ctx, check, model, max_seq).items():
        args += [flag, path]
    return args, max_seq, batch, 16


def recipe_command(ctx: Context, check: Check, model: str, extra: tuple = (), clear: bool = True):
    """The probe's command line for a recipe check: (command, the recipe's args, max_seq, batch, r, probe record)."""
    o = check.options
    t4 = o.get("t4", False)
    args, max_seq, batch, r = recipe_args(ctx, check, model, clear)
    probe = ctx.work / "probes" / f"{check.id}.json"
    inputs = ctx.work / "probes" / f"{check.id}-inputs.pt"
    command = [ctx.python, "dev/recipe_probe.py", "--record", probe, *(["--t4"] if t4 else []),
               *([] if t4 else ["--reload-inputs", inputs]), *extra, o["recipe"], *args]
    return command, args, max_seq, batch, r, probe


def reused_core_run(ctx: Context, check: Check, model: str):
    """On a CPU, core-recipe runs recipe-deepseek's very command (core_recipe): recipe-deepseek then takes that run,
    its record and its log, instead of training the same thing again, when core-recipe passed into this OUT."""
    if not (ctx.cpu and check.id == "recipe-deepseek"):
        return None
    core = ctx.rows.get("core-recipe") or {}
    command, args, max_seq, batch, r, probe = recipe_command(ctx, check, model, clear=False)
    record = load_json(probe, {})
    if core.get("status") != "pass" or core.get("metrics", {}).get("recipe_args") != [str(a) for a in args] or \
            not record.get("ok") or not Path(core.get("log", "")).is_file():
        return None
    text = Path(core["log"]).read_text(encoding="utf-8", errors="replace")
    result = {"rc": 0, "seconds": core["metrics"].get("seconds", 0.0), "log": core["log"], "text": text,
              "tail": tail(text), "reused": "core-recipe"}
    return result, args, max_seq, batch, r, probe


def loading_line(text: str) -> str:
    """The recipe's own `loading MODEL: ..., 4-bit ...` line (what it says it loads)."""
    return next((ln.strip() for ln in text.splitlines() if ln.startswith("loading ")), "")


def four_bit_item(record: dict, text: str) -> dict:
    """The 4-bit path really taken: the model holds bitsandbytes Linear4bit layers (the probe counts them)."""
    model = record.get("model") or {}
    layers = model.get("linear4bit_layers") or 0
    quant = model.get("quantization") or {}
    said = loading_line(text)
    kind = quant.get("bnb_4bit_quant_type") or "?"
    double = ", double quantisation" if quant.get("bnb_4bit_use_double_quant") else ""
    return item("4-bit", bool(model.get("load_in_4bit") and layers > 0),
                f"{layers} bitsandbytes Linear4bit layers ({kind}{double}); load_in_4bit={model.get('load_in_4bit')}"
                + (f"; the recipe printed: {said}" if said else ""))


def batch_items(ctx: Context, batches: dict, vision: bool, text: str, ran: bool) -> list[dict]:
    """Padding-free batches, and no padded or masked token trained (the probe's check of every training batch)."""
    items = []
    if batches.get("training_forwards"):
        shapes = ", ".join(f"{f['rows']}x{f['width']}" + (f" ({len(f['sequence_lengths'])} examples)"
                                                          if f["rows"] == 1 else "")
                           for f in batches.get("first_forwards", [])[:4])
        if vision:
            items.append(item("padding-free", None, "not applicable: vision batches come from the recipe's own "
                                                    f"collator, padded (batches {shapes}, ...)"))
        elif ctx.cpu:
            items.append(item("padding-free", None, "not applicable on CPU: Unsloth pads batches without a GPU "
                                                    f"(batches {shapes}, ...)"))
        else:
            said = "Padding-free auto-enabled" in text or "Padding-free enabled" in text
            pf = batches.get("padding_free")
            items.append(item("padding-free", bool(pf and said),
                              f"{batches['training_forwards']} training batches, {batches['one_row_packed']} of them "
                              f"one row of several examples with no attention mask, {batches['padded_positions']} "
                              f"padded positions; first batches {shapes}; Unsloth "
                              f"{'said' if said else 'did not say'} it enabled padding-free"))
        problems = "; ".join(batches.get("problems", [])[:3])
        items.append(item("labels: only real trained tokens", bool(batches.get("labels_ok")),
                          f"{batches['trained_positions']:,} trained positions in {batches['sequences']:,} sequences, "
                          f"each matched to its training example: {batches['wrong_labels']} wrong, "
                          f"{batches['trained_padding']} on padding, {batches['trained_boundaries']} across an example "
                          f"boundary, {batches['unknown_sequences']} sequences not in the dataset, "
                          f"{batches['lost_labels']} labels lost" + (f" ({problems})" if problems else "")))
    elif ran:
        items.append(item("labels: only real trained tokens", False, "no training batch reached the probe's hook"))
    return items


def loss_items(losses: list, t4: bool = False) -> list[dict]:
    if not losses:
        return []
    finite = all(math.isfinite(x) for x in losses)
    items = [item("loss finite", finite, f"{len(losses)} logged losses, {losses[0]:.4f} (first) -> "
                                         f"{losses[-1]:.4f} (last)")]
    k = min(5, max(1, len(losses) // 3))
    head, end = sum(losses[:k]) / k, sum(losses[-k:]) / k
    means = f"mean of the first {k} {head:.4f}, of the last {k} {end:.4f}"
    if t4:
        items.append(item("loss falls", None, f"not asserted in T4 mode (the recipe's own learning rate, "
                                              f"{len(losses)} steps): {means}"))
    else:
        items.append(item("loss falls", finite and end < head, means))
    return items


def run_recipe(ctx: Context, check: Check) -> dict:
    if check.options.get("t4") and ctx.cpu:
        return t4_planner_rows(ctx, check)
    model = ctx.model(check.model)
    reused = reused_core_run(ctx, check, model)
    if reused:
        result, args, max_seq, batch, r, probe = reused
    else:
        command, args, max_seq, batch, r, probe = recipe_command(ctx, check, model)
        probe.unlink(missing_ok=True)
        result = ctx.run(check.id, command, timeout=1500)  # the run directory was cleared by recipe_args
    return recipe_row(ctx, check, model, result, load_json(probe, {}), probe, max_seq, batch, r)


def recipe_row(ctx: Context, check: Check, model: str, result: dict, record: dict, probe: Path, max_seq: int,
               batch: int, r: int) -> dict:
    o = check.options
    t4, vision = o.get("t4", False), o.get("vision", False)
    # The adapter reloaded in a fresh process: through Unsloth (the same kernels: identical logits) and/or plain
    # transformers + PEFT (what the export merges with); on a CPU, PEFT alone (float32 compute: identical too).
    loaders = [] if t4 or not o.get("reload") else ["peft"] if ctx.cpu else list(o["reload"])
    run_dir = Path(record.get("run_dir") or ctx.work / "runs" / check.id)
    history = load_json(run_dir / "log_history.json", [])
    evaluation = load_json(run_dir / "eval.json", {})
    training = evaluation.get("training", {})
    losses = [e["loss"] for e in history if "loss" in e]
    batches = record.get("batches", {})
    items, metrics = [], {"steps": len(losses), "seconds": result["seconds"], "model": model}

    ran = result["rc"] == 0 and record.get("ok")
    error = record.get("error", {})
    reused = " (core-recipe's run: the same command, reused)" if result.get("reused") else ""
    items.append(item("ran", bool(ran), f"exit {result['rc']} in {result['seconds']:.0f} s{reused}" + (
        "" if ran else f": {error.get('type', '')} {error.get('message', '')[:300] or result['tail'][-600:]}")))
    items += loss_items(losses, t4)
    if losses:
        metrics.update(first_loss=losses[0], last_loss=losses[-1], losses=losses)
    elif ran:
        items.append(item("loss finite", False, "no loss was logged"))
    if record.get("model"):
        items.append(four_bit_item(record, result["text"]))
    metrics["four_bit"] = {k: (record.get("model") or {}).get(k)
                           for k in ("load_in_4bit", "linear4bit_layers", "quantization")}

    # tokens/s, from the recipe's own log (TRL's num_tokens: real tokens, no padding) and from the probe
    tokens = max([e.get("num_tokens", 0) for e in history] or [0])
    seconds = training.get("seconds")
    if seconds:
        metrics["tokens_per_s"] = tokens / seconds
        metrics["trained_tokens_per_s"] = batches.get("trained_positions", 0) / seconds
        metrics["median_step_s"] = training.get("median_step_seconds")

    # memory against the planner
    images = 1 if vision else 0
    rows = max([f["rows"] for f in batches.get("first_forwards", [])] or [1])
    seen_seq = batches.get("max_width") if vision or not batches.get("padding_free") else \
        batches.get("max_tokens_per_forward")
    seen_batch = batches.get("max_rows", rows) if vision or not batches.get("padding_free") else 1
    if ctx.cpu:
        items.append(item("memory vs plan", None, "not applicable on CPU (no GPU memory; the tiny model)"))
    else:
        gpu = "t4" if t4 else f"{ctx.gpu['total_gib']:.2f}"
        planned = plan_for(model, max_seq, batch, r, True, gpu, images)
        metrics.update(plan_gib=planned.peak_gib, plan_need_gib=planned.need_gib, plan_fits=planned.fits)
        peak = training.get("peak_gpu_gib") or record.get("peak_reserved_gib")
        seen = plan_for(model, seen_seq, seen_batch, r, True, gpu, images) if seen_seq else None
        if seen is not None:
            metrics["plan_seen_gib"] = seen.peak_gib
        if peak:
            metrics["peak_gib"] = peak
            reference = seen.peak_gib if seen is not None else planned.peak_gib
            off = (peak - reference) / reference
            largest = "" if seen is None else \
                f", {seen.peak_gib:.2f} for the largest batch seen ({seen_batch} x {seen_seq})"
            items.append(item("memory vs plan", abs(off) <= 0.15 if not t4 else None,
                              f"peak {peak:.2f} GiB reserved; planned {planned.peak_gib:.2f} at {batch} x {max_seq} "
                              f"tokens{largest}: {100 * off:+.0f}% (the planner says ±15%)"))
        if t4:
            items += t4_items(check, record, ran, error, planned, peak)

    # padding-free batches, and no padded or masked token trained
    items += batch_items(ctx, batches, vision, result["text"], ran)
    if batches.get("training_forwards"):
        metrics["batches"] = {k: batches.get(k) for k in ("training_forwards", "sequences", "real_tokens",
                                                          "padded_positions", "trained_positions",
                                                          "max_tokens_per_forward", "min_sequence_length",
                                                          "max_sequence_length")}
        metrics["first_batches"] = batches.get("first_forwards", [])[:3]
    if o.get("fill") and batches.get("training_forwards"):
        lo, hi = batches.get("min_sequence_length"), batches.get("max_sequence_length")
        items.append(item(f"fills {max_seq:,} tokens", lo == hi == max_seq,
                          f"every training example {lo}-{hi} tokens long (--max-seq-length {max_seq})"))

    # the adapter: saved as it is in memory, and reloaded with PEFT on the base
    if record.get("adapter_tensors"):
        t = record["adapter_tensors"]
        items.append(item("adapter saved = in memory", t["ok"], f"{t['tensors']} tensors "
                                                               f"({', '.join(t['saved_dtypes'])}), {t['n_different']} "
                                                               "differ bit for bit"))
    for loader in loaders if ran else []:
        name = f"adapter reloads ({'Unsloth from_pretrained' if loader == 'unsloth' else 'transformers + PEFT'})"
        if not record.get("reload_inputs"):
            items.append(item(name, False, f"could not prepare: {record.get('reload_error', 'no inputs saved')}"))
            continue
        again = ctx.run(f"{check.id}-reload-{loader}", [ctx.python, "dev/recipe_probe.py", "--reload", probe,
                                                        "--loader", loader], timeout=900)
        r_ = (load_json(probe, {}).get("reload") or {}).get(loader)
        if not r_:
            items.append(item(name, False, f"exit {again['rc']}: {again['tail'][-500:]}"))
            continue
        same = "identical" if r_["identical"] else (f"max |diff| {r_['max_abs_diff']:.3g} ({r_['relative_diff']:.2g} "
                                                   f"of the largest logit; tolerance {r_['tolerance']:.2g})")
        if not r_["identical"] and r_.get("base_max_abs_diff") is not None:
            same += f", the base alone (adapter off) differs by {r_['base_max_abs_diff']:.3g}"
        items.append(item(name, r_["ok"], f"{r_['loaded_as']}{' in 4-bit' if r_['quantized'] else ''}: logits {same}, "
                                          f"top-1 agreement {100 * r_['top1_agreement']:.1f}% over {r_['positions']} "
                                          f"positions; the adapter itself moves them by up to "
                                          f"{r_['adapter_effect_max_abs']:.3g}"))
        metrics.setdefault("reload", {})[loader] = r_
    if record.get("trainer"):
        metrics["trainer"] = record["trainer"]
        metrics["model_info"] = record.get("model")
    return {"status": status_of(items), "items": items, "metrics": metrics, "log": result["log"]}


def t4_items(check: Check, record: dict, ran: bool, error: dict, plan, peak) -> list[dict]:
    """fp16 and SDPA really used; the planner's verdict against the outcome; the README's claim against the peak."""
    items = []
    trainer, model = record.get("trainer", {}), record.get("model", {})
    emulated = record.get("t4") or {}
    if trainer:
        fp16 = trainer.get("fp16") and not trainer.get("bf16") and model.get("dtype") == "float16"
        items.append(item("fp16 and SDPA", bool(fp16 and model.get("attention") == "sdpa"),
                          f"trainer fp16={trainer.get('fp16')} bf16={trainer.get('bf16')}, model "
                          f"{model.get('dtype')}, attention {model.get('attention')}; allocator capped at "
                          f"{emulated.get('cap_gib', 0):.2f} GiB"))
    oom = bool(error.get("out_of_memory"))
    outcome = "completed" if ran else "ran out of memory" if oom else "failed (not for memory)"
    agree = (plan.fits and ran) or (not plan.fits and oom)
    items.append(item("planner predicted the outcome", agree if (ran or oom) else False,
                      f"planner: {'fits' if plan.fits else 'does not fit'} ({plan.need_gib:.2f} GiB of "
                      f"{plan.gpu_gib:.2f} with the CUDA context); outcome: {outcome}"
                      + (f", peak {peak:.2f} GiB reserved" if peak else "")))
    claim, gib, tolerance = T4_CLAIMS[check.options["claim"]]
    if check.options.get("fill") or check.options.get("vision"):
        fits = ran and peak is not None
        close = gib is None or (peak is not None and abs(peak - gib) <= tolerance * gib)
        off = "" if gib is None or peak is None else f" ({100 * (peak - gib) / gib:+.0f}% from {gib:.2f} GiB)"
        items.append(item("README claim", bool(fits and close),
                          f"README: {claim}; measured: {f'{peak:.2f} GiB peak, fits' if fits else outcome}{off}"))
    return items

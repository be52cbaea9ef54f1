"""Part 0, the headline: recipes/deepseek_multiturn.py in 4-bit through dev/recipe_probe.py, then raw Unsloth and
transformers + PEFT through scripts/benchmark.py on the same model and the very examples the recipe trained on."""
import shutil
from pathlib import Path

from dev.gpu_check.context import ROOT, Context, item, load_json, status_of
from dev.gpu_check.data import first_rows
from dev.gpu_check.plan import BY_ID, CORE_STEPS, MODELS, Check
from dev.gpu_check.recipes import batch_items, four_bit_item, loss_items, plan_for, recipe_command


def timed_rate(steps: list[dict], warmup: int) -> dict:
    """Tokens/s over the steps after `warmup`, as scripts/benchmark.py computes it (all of them if there are fewer)."""
    timed = steps[warmup:] or steps
    seconds = sum(s["seconds"] for s in timed)
    if not timed or seconds <= 0:
        return {}
    ordered = sorted(s["seconds"] for s in timed)
    return {"tokens_per_s": sum(s["tokens"] for s in timed) / seconds,
            "trained_tokens_per_s": sum(s["trained"] for s in timed) / seconds,
            "median_step_s": ordered[len(ordered) // 2], "timed_steps": len(timed)}


def run_core(ctx: Context, check: Check) -> dict:
    kind = check.options["kind"]
    return core_recipe(ctx, check) if kind == "recipe" else core_baseline(ctx, check, kind)


def core_recipe(ctx: Context, check: Check) -> dict:
    """recipes/deepseek_multiturn.py in 4-bit through the probe, which also writes the examples it trained on for the
    two baselines. On a GPU: the 7B shape at the recipe's defaults on the bundled chats, CORE_STEPS steps. On a CPU:
    recipe-deepseek's own command (the tiny model), so that check takes this run instead of making it again."""
    model = ctx.model("deepseek")
    steps, warmup = CORE_STEPS[ctx.device]
    examples = ctx.work / "bench" / "core" / "train.json"
    examples.parent.mkdir(parents=True, exist_ok=True)
    examples.unlink(missing_ok=True)
    dump = ("--dump-train", examples)
    if ctx.cpu:
        command, args, max_seq, batch, r, probe = recipe_command(ctx, BY_ID["recipe-deepseek"], model, extra=dump)
        accum, steps = 1, int(args[args.index("--max-steps") + 1])
    else:
        max_seq, batch, accum, r = 2048, 2, 4, 16
        run_dir = ctx.work / "runs" / check.id
        shutil.rmtree(run_dir, ignore_errors=True)
        eval_file = first_rows(ROOT / "datasets" / "chat_multiturn" / "test.jsonl", 2,
                               ctx.work / "data" / f"{check.id}-eval.jsonl")
        args = ["--model", model, "--output-dir", run_dir, "--overwrite", "--load-in-4bit", "--max-steps", steps,
                "--batch-size", batch, "--grad-accum", accum, "--max-seq-length", max_seq, "--r", r,
                "--save-steps", "100000", "--eval-prompts", "0", "--eval-file", eval_file]
        probe = ctx.work / "probes" / f"{check.id}.json"
        command = [ctx.python, "dev/recipe_probe.py", "--record", probe, *dump, "recipes/deepseek_multiturn.py",
                   *args]
    probe.unlink(missing_ok=True)
    result = ctx.run(check.id, command, timeout=1200)
    record = load_json(probe, {})
    run_dir = Path(record.get("run_dir") or args[args.index("--output-dir") + 1])
    training = load_json(run_dir / "eval.json", {}).get("training", {})
    losses = [e["loss"] for e in load_json(run_dir / "log_history.json", []) if "loss" in e]
    batches = record.get("batches", {})
    ran = bool(result["rc"] == 0 and record.get("ok"))
    error = record.get("error", {})
    metrics = {"model": model, "seconds": result["seconds"], "recipe_args": [str(a) for a in args],
               "shape": {"seq": max_seq, "batch": batch, "accum": accum, "r": r, "steps": steps, "warmup": warmup},
               "examples": str(examples) if examples.is_file() else None, "losses": losses}
    items = [item("ran", ran, f"exit {result['rc']} in {result['seconds']:.0f} s" + (
        "" if ran else f": {error.get('type', '')} {error.get('message', '')[:300] or result['tail'][-600:]}"))]
    items += loss_items(losses)[:1]  # finite; the loss falling is recipe-deepseek's check (random weights, lr 2e-4)
    if losses:
        metrics.update(first_loss=losses[0], last_loss=losses[-1], steps=len(losses))
    if record.get("model"):
        items.append(four_bit_item(record, result["text"]))
    items += batch_items(ctx, batches, False, result["text"], ran)
    metrics.update(timed_rate(batches.get("steps") or [], warmup))
    if ctx.cpu:
        metrics.update(peak_gib=record.get("peak_rss_gib"), peak_kind="process peak RSS")
    else:
        metrics.update(peak_gib=training.get("peak_gpu_gib") or record.get("peak_reserved_gib"),
                       peak_kind="GPU reserved")
    if ran and "tokens_per_s" in metrics and metrics.get("peak_gib"):
        items.append(item("tokens/s and peak memory", None,
                          f"{metrics['tokens_per_s']:,.0f} tokens/s ({metrics['trained_tokens_per_s']:,.0f} trained) "
                          f"over steps {min(warmup, steps - metrics['timed_steps']) + 1}-{steps}, median step "
                          f"{metrics['median_step_s']:.3f} s; peak {metrics['peak_gib']:.2f} GiB "
                          f"({metrics['peak_kind']}); batch {batch} x {accum}, {max_seq:,} tokens, r={r}"))
        if not ctx.cpu:
            planned = plan_for(model, max_seq, batch, r, True, f"{ctx.gpu['total_gib']:.2f}", 0)
            metrics["plan_gib"] = planned.peak_gib
            items.append(item("memory vs plan", None, f"peak {metrics['peak_gib']:.2f} GiB reserved; planned "
                                                      f"{planned.peak_gib:.2f} at {batch} x {max_seq} tokens"))
    elif ran:
        items.append(item("tokens/s and peak memory", False, "the probe recorded no timed step or no peak"))
    if ran and not examples.is_file():
        items.append(item("examples for the baselines", False, f"the probe wrote no {examples}"))
    if record.get("dumped_train"):
        metrics["examples_count"] = record["dumped_train"]["examples"]
    return {"status": status_of(items), "items": items, "metrics": metrics, "log": result["log"]}


BASELINES = {"unsloth": "raw Unsloth (all tokens trained)", "hf": "transformers + PEFT (padded batches)"}


def core_baseline(ctx: Context, check: Check, kind: str) -> dict:
    """scripts/benchmark.py --runs KIND on core-recipe's model, shape and examples, in 4-bit."""
    core = ctx.rows.get("core-recipe") or {}
    shape = core.get("metrics", {}).get("shape")
    examples = ctx.work / "bench" / "core" / "train.json"
    if not shape or not examples.is_file():
        return {"status": "fail", "items": [item("ran", False, "needs core-recipe's run first (it writes the examples "
                                                               "the recipe trained on): --only core")], "metrics": {}}
    from common.tiny.llama import tiny_model_path
    model_dir = tiny_model_path("deepseek", ctx.cache) if ctx.cpu else ctx.model("deepseek")
    out = ctx.work / "bench" / "core" / kind
    shutil.rmtree(out, ignore_errors=True)
    command = [ctx.python, "scripts/benchmark.py", "--device", ctx.device, "--arch",
               "tiny" if ctx.cpu else MODELS["deepseek"][0], "--model-dir", model_dir, "--examples", examples,
               "--runs", kind, "--max-seq-length", shape["seq"], "--batch-size", shape["batch"], "--grad-accum",
               shape["accum"], "--r", shape["r"], "--max-steps", shape["steps"], "--warmup", shape["warmup"],
               "--load-in-4bit", "--out", out]
    result = ctx.run(check.id, command, timeout=900)
    report = load_json(out / "results.json")
    runs = (report or {}).get("runs") or [{}]
    row = runs[0]
    ran = result["rc"] == 0 and "tokens_per_s" in row
    items = [item("ran", ran, f"exit {result['rc']} in {result['seconds']:.0f} s"
                  + ("" if ran else f": {result['tail'][-600:]}"))]
    if not ran:
        return {"status": status_of(items), "items": items, "metrics": {}, "log": result["log"]}
    metrics = {k: row.get(k) for k in ("tokens_per_s", "trained_tokens_per_s", "peak_gib", "peak_kind",
                                       "median_step_s", "timed_steps", "dtype", "first_loss", "losses", "label")}
    metrics.update(model=str(model_dir), shape=shape, table=(out / "table.md").read_text()
                   if (out / "table.md").exists() else "")
    items += loss_items(row.get("losses") or [])[:1]
    items.append(item("4-bit", "nf4" in (row.get("dtype") or ""),
                      f"{row.get('dtype')}: " + ("FastLanguageModel.from_pretrained(load_in_4bit=True)" if kind ==
                                                 "unsloth" else "BitsAndBytesConfig nf4, double quantisation")))
    items.append(item("tokens/s and peak memory", None,
                      f"{row['tokens_per_s']:,.0f} tokens/s ({row['trained_tokens_per_s']:,.0f} trained) over "
                      f"{row['timed_steps']} timed steps, median step {row['median_step_s']:.3f} s; peak "
                      f"{row['peak_gib']:.2f} GiB ({row['peak_kind']}); {BASELINES[kind]}, the recipe's "
                      f"{examples.name}"))
    recipe = core.get("metrics", {})
    if recipe.get("tokens_per_s") and recipe.get("peak_gib"):
        speed, memory = recipe["tokens_per_s"] / row["tokens_per_s"], recipe["peak_gib"] / row["peak_gib"]
        items.append(item(f"the recipe vs {BASELINES[kind]}", None,
                          f"{recipe['tokens_per_s']:,.0f} vs {row['tokens_per_s']:,.0f} tokens/s ({speed:.2f}x); peak "
                          f"{recipe['peak_gib']:.2f} vs {row['peak_gib']:.2f} GiB ({memory:.2f}x)"
                          + ("; on a CPU these numbers only show the runs work" if ctx.cpu else "")))
        metrics.update(recipe_vs_speed=speed, recipe_vs_memory=memory)
    return {"status": status_of(items), "items": items, "metrics": metrics, "log": result["log"]}

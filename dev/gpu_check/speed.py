"""Part 3, speed against the anchors: scripts/benchmark.py's recipe path, raw Unsloth and HF + PEFT side by side,
at a fixed 2K length and at the bundled chats' mixed lengths, against TARGETS."""
import shutil

from dev.gpu_check.context import Context, item, load_json, status_of
from dev.gpu_check.plan import REFERENCE, TARGETS, Check


def run_speed(ctx: Context, check: Check) -> dict:
    lengths = check.options["lengths"]
    out = ctx.work / "bench" / lengths
    shutil.rmtree(out, ignore_errors=True)
    if ctx.cpu:
        size = (["--max-seq-length", "64", "--batch-size", "2"] if lengths == "fixed"
                else ["--max-seq-length", "128", "--batch-size", "4", "--runs", "recipe"])
        command = [ctx.python, "scripts/benchmark.py", "--device", "cpu", "--arch", "tiny", "--lengths", lengths,
                   *size, "--grad-accum", "1", "--max-steps", "2", "--warmup", "1", "--load-in-4bit", "--out", out]
    else:
        size = (["--max-seq-length", "2048", "--batch-size", "2", "--grad-accum", "4"] if lengths == "fixed"
                else ["--max-seq-length", "2048", "--batch-size", "8", "--grad-accum", "1", "--runs", "recipe,hf"])
        command = [ctx.python, "scripts/benchmark.py", "--device", "cuda", "--arch", "llama-3.1-8b", "--model-dir",
                   ctx.model("llama"), "--lengths", lengths, *size, "--r", "32", "--max-steps", "6", "--warmup", "2",
                   "--out", out]
    result = ctx.run(check.id, command, timeout=1800)
    report = load_json(out / "results.json")
    items = [item("ran", result["rc"] == 0 and report is not None, f"exit {result['rc']} in {result['seconds']:.0f} s"
                  + ("" if result["rc"] == 0 else f": {result['tail'][-600:]}"))]
    if report is None:
        return {"status": status_of(items), "items": items, "metrics": {}, "log": result["log"]}
    by = {r["run"]: r for r in report["runs"]}
    metrics = {"runs": report["runs"], "predicted_peak_gib": report.get("predicted_peak_gib"),
               "table": (out / "table.md").read_text() if (out / "table.md").exists() else ""}
    items.append(item("first losses agree", bool(report.get("first_losses_agree")),
                      ", ".join(f"{k} {v:.4f}" for k, v in report["first_losses"].items())))
    dtypes = {r["run"]: r.get("dtype", "") for r in report["runs"]}
    items.append(item("4-bit", all("nf4" in d for d in dtypes.values()),
                      ", ".join(f"{k} {v}" for k, v in dtypes.items())))
    na = ("not applicable on CPU (the tiny model, nf4 weights with float32 compute, padded batches: the numbers only "
          "show the script works)")
    recipe, hf = by.get("recipe"), by.get("hf")
    if lengths == "fixed":
        raw = by.get("unsloth")
        if ctx.cpu:
            items.append(item("targets", None, na))
        else:
            if recipe and raw:
                ratio = recipe["tokens_per_s"] / raw["tokens_per_s"]
                items.append(item("recipe within 3% of raw Unsloth", ratio >= TARGETS["vs_raw_unsloth"],
                                  f"{recipe['tokens_per_s']:,.0f} vs {raw['tokens_per_s']:,.0f} tokens/s "
                                  f"({ratio:.3f}x)"))
            if recipe and hf:
                speed = recipe["tokens_per_s"] / hf["tokens_per_s"]
                memory = recipe["peak_gib"] / hf["peak_gib"]
                items.append(item("at least 1.8x HF + PEFT", speed >= TARGETS["vs_hf_speed"],
                                  f"{recipe['tokens_per_s']:,.0f} vs {hf['tokens_per_s']:,.0f} tokens/s "
                                  f"({speed:.2f}x)"))
                items.append(item("at most 0.6x HF + PEFT's memory", memory <= TARGETS["vs_hf_memory"],
                                  f"{recipe['peak_gib']:.2f} vs {hf['peak_gib']:.2f} GiB ({memory:.2f}x)"))
        metrics["reference"] = REFERENCE["fixed"]
    else:
        if ctx.cpu:
            items.append(item("targets", None, na))
        elif recipe and hf:
            speed = recipe["trained_tokens_per_s"] / hf["trained_tokens_per_s"]
            items.append(item("at least 2.5x HF + PEFT padded, trained tokens/s",
                              speed >= TARGETS["mixed_vs_hf_trained"],
                              f"{recipe['trained_tokens_per_s']:,.0f} vs {hf['trained_tokens_per_s']:,.0f} trained "
                              f"tokens/s ({speed:.2f}x); padding {recipe['padding_pct']:.0f}% vs "
                              f"{hf['padding_pct']:.0f}%"))
        metrics["reference"] = REFERENCE["mixed"]
    if not ctx.cpu:
        for row in report["runs"]:
            predicted = (report.get("predicted_peak_gib") or {}).get(row["run"])
            if predicted:
                off = (row["peak_gib"] - predicted) / predicted
                items.append(item(f"memory vs plan ({row['run']})", abs(off) <= 0.15,
                                  f"peak {row['peak_gib']:.2f} GiB, planned {predicted:.2f} ({100 * off:+.0f}%)"))
    return {"status": status_of(items), "items": items, "metrics": metrics, "log": result["log"]}

"""The report: OUT/report.md from the rows of results.json, the files written after every check (results.json,
report.md, logs.tar.gz), and what a run records about itself (the package versions, the GPU)."""
import importlib.metadata
import json
import tarfile
from pathlib import Path

from common.errors import UserError
from common.memory_plan import CONTEXT_GIB
from dev.gpu_check.context import Context
from dev.gpu_check.core import BASELINES
from dev.gpu_check.plan import CHECKS, PACKAGES, PARTS, PLANNED_S, T4_GIB, minutes


def mark(ok) -> str:
    return {True: "PASS", False: "FAIL", None: "n/a"}[ok]


def report_markdown(results: dict) -> str:
    meta = results["meta"]
    lines = ["# GPU check", ""]
    for run in meta["runs"]:
        gpu = run.get("gpu") or {}
        planned = f" (planned ~{minutes(run['planned_s'])} min on one H100, an estimate)" \
            if run.get("planned_s") and run["device"] == "cuda" else ""
        lines.append(f"- {run['started']}: `{' '.join(run['argv'])}` on {gpu.get('name', 'a CPU')} "
                     f"({run['device']}{', %.1f GiB' % gpu['total_gib'] if gpu.get('total_gib') else ''}), "
                     f"{run.get('seconds', 0) / 60:.1f} min{planned}")
        versions = ", ".join(f"{k} {v}" for k, v in run.get("versions", {}).items() if v)
        lines.append(f"  - {versions}")
        for group, b in run.get("builds", {}).items():
            lines.append(f"  - built {b['arch']} (random weights): {b['seconds']:.0f} s, {b['gib_on_disk']:.1f} GiB "
                         "on disk" + (", deleted after use" if b.get("deleted_after_use") else ""))
    if any(run["device"] == "cpu" for run in meta["runs"]):
        lines += ["", "On a CPU each check runs a tiny model of its family (each recipe's `--model tiny`, or "
                  "`dev.real_tokenizers.build_tiny_family_model`) in 4-bit (bitsandbytes nf4 weights, float32 "
                  "compute) instead of the real shape its title names: it shows the script and the recipes' 4-bit "
                  "path work, not what a GPU measures."]
    rows = results["checks"]
    counts = {s: sum(r["status"] == s for r in rows.values()) for s in ("pass", "fail", "error", "skipped", "n/a")}
    lines += ["", "## Summary", "", " · ".join(f"{v} {k}" for k, v in counts.items() if v), "",
              "| check | part | status | seconds | planned on one H100 (estimate) |", "|---|---|---|---:|---:|"]
    for check in CHECKS:
        if check.id in rows:
            took = rows[check.id].get("seconds")
            lines.append(f"| {check.id} | {check.part} | {rows[check.id]['status'].upper()} | "
                         f"{'-' if took is None else f'{took:.0f}'} | ~{PLANNED_S[check.id]} s |")
    for part, heading in PARTS.items():
        lines += ["", f"## {heading}", ""]
        if part == "speed":
            lines += ["Reference, not measured by this script (raw Unsloth 2026.10.9 vs HF + PEFT, one H100, "
                      "Llama-3.1-8B shape, r=32, an earlier measurement): 2K batch 2 x 4, Unsloth 9,696 tokens/s at "
                      "7.25 GiB, HF + PEFT 5,209 tokens/s at 12.02 GiB; mixed lengths batch 8, padding-free 8,217 "
                      "tokens/s vs HF + PEFT padded 2,871.", ""]
        if part == "t4":
            lines += ["T4 mode emulates a free Colab T4's precision and memory on this GPU: fp16 (no bf16), SDPA, "
                      f"torch's allocator capped at {T4_GIB - CONTEXT_GIB:.2f} GiB ({T4_GIB} GiB less the CUDA "
                      "context). Its speed is this GPU's, not a T4's, and Unsloth still sees this GPU's compute "
                      "capability.", ""]
        shown = [c for c in CHECKS if c.part == part and c.id in rows]
        if part == "core" and shown:
            lines += core_table(rows)
        if not shown:
            lines.append("not run")
        for check in shown:
            row = rows[check.id]
            lines += [f"### {check.id}: {check.title} — {row['status'].upper()}", ""]
            m = row.get("metrics", {})
            numbers = []
            if m.get("model"):
                name = "the tiny model (--model tiny)" if m["model"] == "tiny" else Path(m["model"]).name
                numbers.append(f"model {name}")
            if "tokens_per_s" in m:
                numbers.append(f"{m['tokens_per_s']:,.0f} tokens/s ({m.get('trained_tokens_per_s', 0):,.0f} trained)")
            if m.get("peak_gib"):
                numbers.append(f"peak {m['peak_gib']:.2f} GiB {m.get('peak_kind', 'reserved')}")
            if "steps" in m and m.get("first_loss") is not None:
                numbers.append(f"{m['steps']} steps, loss {m['first_loss']:.4f} -> {m['last_loss']:.4f}")
            if numbers:
                lines += ["- " + "; ".join(numbers)]
            for i in row.get("items", []):
                lines.append(f"- {mark(i['ok'])} {i['name']}: {i['detail']}")
            if row.get("error"):
                lines += ["", "```", row["error"][-1500:], "```"]
            if m.get("table"):
                lines += ["", m["table"]]
            if row.get("log"):
                lines.append(f"- log: `{Path(row['log']).name}` (in logs.tar.gz)")
            lines.append("")
    return "\n".join(lines) + "\n"


def core_table(rows: dict) -> list[str]:
    """The headline: the recipe, raw Unsloth and HF + PEFT side by side (from the core rows that ran)."""
    recipe = rows.get("core-recipe", {}).get("metrics", {})
    lines = ["| run | tokens/s (after warm-up) | trained tokens/s | median step (s) | peak memory (GiB) | the recipe's "
             "tokens/s vs this |", "|---|---:|---:|---:|---:|---:|"]
    for check_id, label in (("core-recipe", "recipes/deepseek_multiturn.py (4-bit)"),
                            ("core-unsloth", f"{BASELINES['unsloth']}, 4-bit"),
                            ("core-hf", f"{BASELINES['hf']}, 4-bit")):
        m = rows.get(check_id, {}).get("metrics", {})
        if not m.get("tokens_per_s"):
            lines.append(f"| {label} | - | - | - | - | - |")
            continue
        ratio = f"{recipe['tokens_per_s'] / m['tokens_per_s']:.2f}x" if recipe.get("tokens_per_s") else "-"
        peak = f"{m['peak_gib']:.2f} ({m.get('peak_kind', '')})" if m.get("peak_gib") else "-"
        lines.append(f"| {label} | {m['tokens_per_s']:,.0f} | {m.get('trained_tokens_per_s', 0):,.0f} | "
                     f"{m.get('median_step_s') or 0:.3f} | {peak} | {ratio} |")
    shape = recipe.get("shape") or {}
    if shape:
        lines += ["", f"The same model, examples ({recipe.get('examples_count', '?')}, the recipe's prepared train "
                  f"set) and shape for all three: batch {shape['batch']} x {shape['accum']}, up to {shape['seq']:,} "
                  f"tokens, r={shape['r']}, {shape['steps']} steps of which the first {shape['warmup']} are left out "
                  "of tokens/s. Raw Unsloth trains every token (input_ids only); HF + PEFT pads its batches."]
    return lines + [""]


def write_outputs(out: Path, results: dict, logs: Path | None = None):
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1, default=str, ensure_ascii=False), encoding="utf-8")
    tmp.rename(out / "results.json")
    (out / "report.md").write_text(report_markdown(results), encoding="utf-8")
    if logs is not None and logs.is_dir():
        with tarfile.open(out / ".logs.tar.gz.tmp", "w:gz") as tar:
            for log in sorted(logs.glob("*.log")):
                tar.add(log, arcname=log.name)
        (out / ".logs.tar.gz.tmp").rename(out / "logs.tar.gz")


def versions() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def gpu_info(ctx: Context) -> dict:
    code = ("import json, torch; p = torch.cuda.get_device_properties(0); print(json.dumps({'name': p.name, "
            "'total_gib': p.total_memory / 2**30, 'capability': list(torch.cuda.get_device_capability(0)), "
            "'cuda': torch.version.cuda}))")
    result = ctx.run("gpu-info", [ctx.python, "-c", code], timeout=300)
    line = result["text"].strip().splitlines()[-1] if result["rc"] == 0 else ""
    try:
        return json.loads(line)
    except ValueError:
        raise UserError(f"--device cuda: torch cannot use a GPU here ({result['tail'][-300:]}); "
                        "use --device cpu") from None

"""Train every LoRA variant for the same steps on the same data, and compare them in one table and one plot.

    python scripts/compare_lora.py --model tiny                        # offline, CPU: a few minutes
    python scripts/compare_lora.py --model unsloth/Meta-Llama-3.1-8B-Instruct --max-steps 60

Each variant runs recipes/llama_text.py (or --recipe) in its own process, so each starts from the same
state. Writes OUT/results.json, OUT/table.md and OUT/loss_curves.png (OUT is --out, default runs/compare_lora).
Peak memory is GPU memory reserved on a GPU, and the process's peak resident memory on a CPU.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import common.startup  # noqa: E402, F401  before torch loads: how long idle threads spin (common/startup.py)
from common.errors import UserError, report_user_errors  # noqa: E402
from common.hub import check_model_available  # noqa: E402

VARIANTS = {
    "LoRA": [],
    "rsLoRA": ["--use-rslora"],
    "DoRA": ["--use-dora"],
    "gaussian init": ["--init", "gaussian"],
    "PiSSA": ["--init", "pissa"],
    "LoftQ": ["--init", "loftq"],
    "AdaLoRA": ["--adalora"],
}


def run_variant(recipe, args, out) -> float:
    """Run one variant; return the peak resident memory of its process in GiB."""
    process = subprocess.Popen([sys.executable, recipe, *args, "--output-dir", str(out), "--overwrite",
                                "--eval-prompts", "0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)  # wait4, unlike wait, reports this child's own peak memory
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode == 2:  # the recipe refused its input (a bad flag, data, model): its one line, exit 2
        errors = [line for line in output.splitlines() if line.startswith("error: ")]
        if errors:
            raise UserError(f"{recipe}: {errors[-1].removeprefix('error: ')}")
    if process.returncode != 0:
        print(output[-3000:])
        raise SystemExit(f"error: {recipe} {' '.join(args)} failed with exit code {process.returncode}")
    return usage.ru_maxrss / 2**20  # KiB on Linux


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--recipe", default="recipes/llama_text.py")
    parser.add_argument("--max-steps", type=int, default=25, help="the same for every variant")
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--out", default="runs/compare_lora")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="a comma-separated subset")
    args, extra = parser.parse_known_args(argv)  # anything else goes to the recipe unchanged
    names = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown or not names:  # checked before any variant trains
        raise UserError(f"--variants {','.join(unknown) or '(none)'}: choose from {', '.join(VARIANTS)} "
                        "(comma-separated; quote names with spaces)")
    if not (ROOT / args.recipe).is_file():  # ROOT / an absolute path is that path
        raise UserError(f"--recipe {args.recipe}: no such file; give a recipe script, such as recipes/llama_text.py")
    if args.model != "tiny":  # a missing model fails each variant's run, far from here, after the imports
        check_model_available(args.model)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        flags = VARIANTS[name]
        # start at r + r/2 and prune to an average of r (12 -> 8 at r=8, as suggested for 7B models)
        if name == "AdaLoRA":
            flags = flags + ["--init-r", str(args.r * 3 // 2), "--target-r", str(args.r),
                             "--tinit", str(max(1, args.max_steps // 10)), "--tfinal", str(max(1, args.max_steps // 5))]
        run_dir = out / name.replace(" ", "_")
        print(f"{name}: {' '.join(flags) or '(plain LoRA)'}", flush=True)
        peak_rss = run_variant(args.recipe, ["--model", args.model, "--max-steps", str(args.max_steps),
                                             "--r", str(args.r), *flags, *extra], run_dir)
        result = json.loads((run_dir / "eval.json").read_text())
        training = result["training"]
        losses = [e["loss"] for e in json.loads((run_dir / "log_history.json").read_text()) if "loss" in e]
        rows.append({
            "variant": name, "flags": " ".join(flags),
            "trainable_params": training["trainable_params"],
            "step_seconds": training["median_step_seconds"],
            "peak_memory_gib": training["peak_gpu_gib"] if training["peak_gpu_gib"] is not None
            else peak_rss,
            "memory_kind": "GPU reserved" if training["peak_gpu_gib"] is not None else "process RSS",
            "train_loss": losses[-1], "eval_loss": result["held_out_loss"]["tuned"], "losses": losses,
        })
        shutil.rmtree(run_dir / "loftq_base", ignore_errors=True)  # a full copy of the base model: not needed here

    (out / "results.json").write_text(json.dumps(rows, indent=1))
    header = ("| variant | flags | trainable params | median step time (s) | peak memory (GiB) "
              "| final train loss | final eval loss |\n"
              "|---|---|---:|---:|---:|---:|---:|\n")
    table = header + "".join(
        f"| {r['variant']} | `{r['flags'] or '-'}` | {r['trainable_params']:,} | {r['step_seconds']:.3f} | "
        f"{r['peak_memory_gib']:.2f} | {r['train_loss']:.4f} | {r['eval_loss']:.4f} |\n" for r in rows)
    (out / "table.md").write_text(table)
    print(table)
    print(f"memory is {rows[0]['memory_kind']}; {args.max_steps} steps each, model {args.model}. AdaLoRA's train "
          "loss includes its orthogonality penalty (orth_reg_weight); compare eval loss across variants.")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        ax.plot(range(1, len(r["losses"]) + 1), r["losses"], label=r["variant"])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (assistant tokens)")
    ax.set_title(f"LoRA variants on {args.model}, r={args.r}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=120)
    print(f"wrote {out / 'results.json'}, {out / 'table.md'}, {out / 'loss_curves.png'}")


if __name__ == "__main__":
    sys.excepthook = report_user_errors
    main()

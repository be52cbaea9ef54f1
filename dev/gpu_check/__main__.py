"""Check on one GPU what the tests cannot: the headline (the DeepSeek recipe in 4-bit beside raw Unsloth and
transformers + PEFT), every recipe end to end in 4-bit, a free Colab T4's fp16, the speed against the anchors, and the
export from a 4-bit run. Writes OUT/report.md and OUT/results.json (and OUT/logs.tar.gz).

    python dev/gpu_check --out DIR                             # everything on the GPU
    python dev/gpu_check --out DIR --only core                 # the headline: a few minutes of GPU time
    python dev/gpu_check --out DIR --only deepseek             # groups: core deepseek llama speed vision r1-qwen
    python dev/gpu_check --out DIR --only recipes,t4           # parts: core, recipes, t4, speed, export
    python dev/gpu_check --out DIR --device cpu                # tiny models on a CPU: keeps this script alive
    python dev/gpu_check --out ALL --merge A/results.json B/results.json   # one report from runs in parts

0. core     The headline, for short access to a GPU: recipes/deepseek_multiturn.py at the DeepSeek-LLM-7B shape in
            4-bit at its defaults (batch 2 x 4, r=16, 2,048 tokens) on the bundled chats, through
            dev/recipe_probe.py (tokens/s after warm-up steps, the peak reserved memory, the 4-bit layers really
            loaded, every training batch checked), then raw Unsloth and transformers + PEFT through scripts/benchmark.py
            on the same model and the very examples the recipe trained on (recipe_probe --dump-train), 4-bit too.
1. recipes  Each recipe file end to end, as a subprocess, on a random-weight model of the real shape built here from
            benchmarks/configs/ (bf16 weights saved once and cached, loaded in 4-bit by the recipe through
            bitsandbytes on the fly) with the real tokenizer of its family (fixtures/tokenizers): DeepSeek-LLM-7B and
            R1-Distill-Qwen-1.5B through recipes/deepseek_multiturn.py, Llama-3.1-8B through recipes/llama_text.py
            (also on generated chats that fill 2,048 tokens), Llama-3.2-11B-Vision through recipes/llama_vision.py
            (FastVisionModel) on the bundled images. Each records: the loss is finite and falls; tokens/s; that the
            model holds bitsandbytes Linear4bit layers; the peak reserved memory beside plan_memory's prediction; that
            Unsloth batched padding-free and that no step trained a padded or masked token (dev/recipe_probe.py
            checks every training batch against the dataset); the saved adapter is the in-memory one bit for bit, and
            PEFT on the base (the same 4-bit quantization) reloads it with the in-memory model's logits.
2. t4       What a free Colab T4 gives: fp16 (no bf16), SDPA, torch's allocator capped at what a T4's 14.74 GiB leaves
            after the CUDA context; the DeepSeek and Llama text recipes at their default settings on chats that fill
            2K (their worst case: the bundled chats are shorter), the vision recipe at its defaults on the bundled
            images. The planner's T4 verdict beside the outcome, and the README's T4 claims beside the measurement. On
            a CPU: the planner's verdicts only.
3. speed    scripts/benchmark.py, the recipe path, raw Unsloth and HF + PEFT side by side on the same data: the
            Llama-3.1-8B shape at 2K, batch 2 x 4, r=32 on all linear layers; the bundled chats' mixed lengths at
            batch 8. Targets: recipe within 3% of raw Unsloth's tokens/s, at least 1.8x HF + PEFT, at most 0.6x its
            peak memory; mixed lengths at least 2.5x HF + PEFT's padded batches in trained tokens/s.
4. export   A 4-bit run (trained on a NAME-bnb-4bit checkpoint) merged into its 16-bit base found from the name, GGUF
            f16 and q4_k_m with the parity check (export_run), then scripts/export.py --base; each step timed, with
            the peak host and GPU memory.

Groups (--only NAME) split the checks so that each fits a short stretch of GPU time (its planned time, an estimate,
is listed at the end of --help): core; deepseek (recipe-deepseek, t4-deepseek); llama (recipe-llama, recipe-llama-2k,
t4-llama); speed; vision (recipe-vision, t4-vision); r1-qwen (recipe-r1-qwen, export-4bit). Parts and single check
ids work with --only too.

--device cpu runs the same on tiny shapes (each recipe's --model tiny, dev.real_tokenizers.build_tiny_family_model
for the real tokenizers), in 4-bit as on a GPU (bitsandbytes' CPU backend; Unsloth's CPU fallback loads Linear4bit
layers): the recipe runs pass --load-in-4bit, the core runs and the speed runs train nf4 weights, and the export
merges a 4-bit run into its 16-bit base. What a CPU cannot check (padding-free batches, GPU memory, the speed targets,
T4 mode, a NAME-bnb-4bit checkpoint) says "not applicable on CPU". The CPU run reuses what it can: core-recipe is
recipe-deepseek's run, and the export exports it; its subprocesses run one thread each (OMP_NUM_THREADS=1 unless set).
Every part writes its rows into results.json as it finishes (a run cut short keeps what it did); an error in one
check is recorded and the next one runs. Exit code 0 when every check passed, 1 when one failed, 2 for a bad argument.
"""
import argparse
import platform
import sys
import time
import traceback
from pathlib import Path

# `python dev/gpu_check` puts this directory first on sys.path, where the package's modules (plan, data, export, ...)
# would stand in for any top-level module of the same name: the repository root takes its place, and the modules are
# imported as dev.gpu_check.NAME (dev/ is a namespace package), as the tests import them.
PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != PACKAGE_DIR]
sys.path.insert(0, str(ROOT))

import common.startup  # noqa: E402, F401  before torch loads: how long idle threads spin (common/startup.py)
from common.errors import UserError, report_user_errors  # noqa: E402
from dev.gpu_check.context import Context, item, load_json  # noqa: E402
from dev.gpu_check.export import export_worker  # noqa: E402
from dev.gpu_check.plan import CORE_STEPS, GROUPS, PARTS, plan_text, planned_seconds, select  # noqa: E402
from dev.gpu_check.report import gpu_info, mark, versions, write_outputs  # noqa: E402
from dev.gpu_check.runners import RUNNERS  # noqa: E402


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2, like every other bad argument here
        raise UserError(f"{message} (python dev/gpu_check --help)")


def build_worker(what: str, cache):
    """--build KIND:ARG in a child process: prints `built PATH` (the GPU memory is freed when it exits)."""
    from dev import random_models
    kind, arg = what.split(":", 1)
    if kind == "text":
        path = random_models.random_text_model(arg, cache)
    elif kind == "vision":
        path = random_models.random_vision_model(cache)
    elif kind == "bnb4":
        path = random_models.quantized_copy(arg)
    else:
        raise UserError(f"--build {what}: unknown kind")
    print(f"built {path}")


def main(argv=None) -> int:
    parser = Parser(description=__doc__, epilog=plan_text(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="where report.md, results.json and logs.tar.gz go")
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda if there is a GPU")
    parser.add_argument("--only", default=None, help=f"groups ({', '.join(GROUPS)}; their planned times are listed "
                        f"below), parts ({', '.join(PARTS)}) and/or check ids, comma-separated")
    parser.add_argument("--work", default=None, help="runs, data and logs (default OUT/work)")
    parser.add_argument("--cache", default=None, help="where the models are built (default: the tiny models' cache)")
    parser.add_argument("--max-steps", type=int, default=None, help="steps of each recipe run (default 20; 3 on a CPU; "
                        f"the core runs take {CORE_STEPS['cuda'][0]} on a GPU)")
    parser.add_argument("--t4-steps", type=int, default=5, help="steps of each T4-mode run (default 5)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds: start no check after this, and cut a running one short to end in time")
    parser.add_argument("--keep-models", action="store_true", help="keep the random-weight models after use")
    parser.add_argument("--merge", nargs="+", default=None, metavar="RESULTS_JSON",
                        help="write one report from the results.json of earlier runs (runs nothing)")
    parser.add_argument("--build", default=None, help=argparse.SUPPRESS)  # internal: build one model
    parser.add_argument("--export-worker", default=None, help=argparse.SUPPRESS)  # internal: one timed export
    args = parser.parse_args(argv)
    if args.build:
        build_worker(args.build, args.cache)
        return 0
    if args.export_worker:
        export_worker(args.export_worker)
        return 0
    if not args.out:
        raise UserError("--out DIR is required: where report.md and results.json go")
    out = Path(args.out)
    if args.merge:
        merged = {"meta": {"runs": []}, "checks": {}}
        for path in args.merge:
            loaded = load_json(path)
            if not loaded or "checks" not in loaded:
                raise UserError(f"--merge {path}: not a results.json of dev/gpu_check")
            merged["meta"]["runs"] += loaded["meta"]["runs"]
            merged["checks"].update(loaded["checks"])
        write_outputs(out, merged)
        print(f"wrote {out / 'report.md'} and {out / 'results.json'} from {len(args.merge)} runs")
        return 0
    for flag, value in (("--max-steps", args.max_steps), ("--t4-steps", args.t4_steps),
                        ("--time-limit", args.time_limit)):
        if value is not None and value <= 0:
            raise UserError(f"{flag} {value}: must be positive")
    checks = select(args.only)
    import torch  # only asked whether there is a GPU: this process never allocates on it
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: torch sees no GPU here; use --device cpu (tiny models) on this machine")
    ctx = Context(args)
    start = time.time()
    run_meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "argv": ["dev/gpu_check", *(argv or sys.argv[1:])],
                "device": ctx.device, "host": platform.node(), "versions": versions(), "builds": ctx.builds,
                "planned_s": planned_seconds([c.id for c in checks])}
    if ctx.device == "cuda":
        ctx.gpu = run_meta["gpu"] = gpu_info(ctx)
    previous = load_json(out / "results.json")  # an earlier part in the same OUT: its rows are kept
    results = previous if previous and "checks" in previous else {"meta": {"runs": []}, "checks": {}}
    results["meta"]["runs"].append(run_meta)
    ctx.rows = results["checks"]
    ctx.passed = {k: r.get("status") == "pass" for k, r in ctx.rows.items()}
    last_use = {c.model: i for i, c in enumerate(checks)}
    for i, check in enumerate(checks):
        print(f"[{time.strftime('%H:%M:%S')}] {check.id}: {check.title} ...", flush=True)
        left = ctx.remaining()
        if left is not None and left < 60:
            row = {"status": "skipped", "items": [item("not started", None, "--time-limit reached")]}
        else:
            t0 = time.time()
            try:
                row = RUNNERS[check.run](ctx, check)
            except Exception as err:  # noqa: BLE001  recorded; the next check still runs
                row = {"status": "error", "items": [item("error", False, f"{type(err).__name__}: {err}"[:1500])],
                       "error": traceback.format_exc()}
            row["seconds"] = round(time.time() - t0, 1)
        row.update(part=check.part, title=check.title)
        results["checks"][check.id] = row
        ctx.passed[check.id] = row["status"] == "pass"
        if last_use[check.model] == i:
            ctx.release(check.model)
        run_meta["seconds"] = time.time() - start
        write_outputs(out, results, ctx.work / "logs")
        print(f"  {row['status'].upper()} ({row.get('seconds', 0):.0f} s)", flush=True)
        for it in row["items"]:
            print(f"    {mark(it['ok'])} {it['name']}: {it['detail'][:300]}")
    rows = [results["checks"][c.id] for c in checks]
    failed = [c.id for c, r in zip(checks, rows) if r["status"] in ("fail", "error")]
    print(f"\nsummary: {sum(r['status'] == 'pass' for r in rows)} passed, {len(failed)} failed"
          + (f" ({', '.join(failed)})" if failed else "")
          + f", {sum(r['status'] in ('n/a', 'skipped') for r in rows)} not applicable or skipped; "
          f"{(time.time() - start) / 60:.1f} min. Wrote {out / 'report.md'} and {out / 'results.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.excepthook = report_user_errors
    sys.exit(main())

"""The tiny run's training time alone on the CPU and beside busy processes, with the OpenMP waiting the recipe sets
itself (common/startup.py) and set by hand. A developer's measurement, not a test: the numbers depend on the machine
and on whatever else runs on it, so the load average is printed beside each.

    python dev/busy_neighbours.py                            # 8 steps; alone and beside 2 busy processes; twice each
    python dev/busy_neighbours.py --repeat 3 --policies default,PASSIVE,1000,2000 --load-in-4bit
    python dev/busy_neighbours.py --root ../before           # the recipe of another checkout (before a change)
    python dev/busy_neighbours.py --neighbours 0 --steps 38 --repeat 4     # alone only: the idle machine's case

A case is one run of `recipes/deepseek_multiturn.py --model tiny --max-steps N --eval-prompts 0`, its own process,
timed by its own "trained N steps in S s" line (the training loop only). Its policy is
  default   OMP_WAIT_POLICY and GOMP_SPINCOUNT not set: what a user who sets nothing gets (common/startup.py's)
  PASSIVE   OMP_WAIT_POLICY=PASSIVE set by hand (idle OpenMP threads sleep)
  ACTIVE    OMP_WAIT_POLICY=ACTIVE set by hand (idle OpenMP threads spin)
  N         GOMP_SPINCOUNT=N set by hand (a number): an idle thread spins N turns, then sleeps (default: 300,000)
A busy neighbour is a plain torch process multiplying 1024x1024 matrices in a loop, started before the run and
stopped after it, with libgomp's own defaults (neither variable set), as an unrelated program has.
Prints each run and, per policy, the median time alone, beside the neighbours, and their ratio; writes the raw
numbers to OUT/results.json (--out, default runs/busy_neighbours).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.errors import UserError, report_user_errors  # noqa: E402

POLICIES = ("default", "PASSIVE", "ACTIVE")
NEIGHBOUR = "import torch\na = torch.randn(1024, 1024)\nprint('busy', flush=True)\nwhile True:\n    a @ a\n"
TRAINED = re.compile(r"trained (\d+) steps in ([\d.]+) s")


def start_neighbours(count: int, env: dict) -> list[subprocess.Popen]:
    """`count` busy torch processes, each already multiplying when this returns."""
    neighbours = [subprocess.Popen([sys.executable, "-c", NEIGHBOUR], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True) for _ in range(count)]
    for neighbour in neighbours:
        if neighbour.stdout.readline().strip() != "busy":
            stop(neighbours)
            raise UserError("a busy neighbour did not start: python -c 'import torch' fails here")
    return neighbours


def stop(neighbours: list[subprocess.Popen]) -> None:
    for neighbour in neighbours:
        neighbour.kill()
        neighbour.wait()


def one_run(root: Path, policy: str, neighbours: int, steps: int, flags: list[str], base_env: dict) -> dict:
    env = dict(base_env)
    if policy.isdigit():
        env["GOMP_SPINCOUNT"] = policy
    elif policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [base_env.get("PYTHONPATH")])])
    busy = start_neighbours(neighbours, base_env)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as out:
            result = subprocess.run([sys.executable, "recipes/deepseek_multiturn.py", "--model", "tiny", "--max-steps",
                                     str(steps), "--eval-prompts", "0", "--output-dir", out, *flags],
                                    cwd=root, env=env, capture_output=True, text=True)
    finally:
        stop(busy)
    found = TRAINED.search(result.stdout)
    if result.returncode or not found:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"the run ({policy}, {neighbours} busy) failed: {tail}")
    return {"policy": policy, "neighbours": neighbours, "train_s": float(found.group(2)),
            "run_s": round(time.perf_counter() - start, 1), "load_1min_at_start": load,
            "load_1min_at_end": os.getloadavg()[0]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run (default 8)")
    parser.add_argument("--neighbours", type=int, default=2,
                        help="busy processes beside the run (default 2; 0: only the runs alone)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each case (default 2)")
    parser.add_argument("--policies", default="default,PASSIVE",
                        help="comma-separated, of: " + ", ".join(POLICIES) + ", or a number: GOMP_SPINCOUNT "
                        "(default: default,PASSIVE)")
    parser.add_argument("--load-in-4bit", action="store_true", help="the 4-bit QLoRA path (bitsandbytes' CPU backend)")
    parser.add_argument("--root", default=str(ROOT), help="the checkout whose recipe runs (default: this one)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "busy_neighbours"))
    args = parser.parse_args(argv)
    policies = [p.strip() for p in args.policies.split(",")]
    if any(p not in POLICIES and not p.isdigit() for p in policies):
        raise UserError(f"--policies {args.policies}: choose from {', '.join(POLICIES)}, or numbers (GOMP_SPINCOUNT)")
    if args.steps < 1 or args.repeat < 1 or args.neighbours < 0:
        raise UserError("--steps and --repeat must be positive, --neighbours 0 or more")
    root = Path(args.root).resolve()
    if not (root / "recipes" / "deepseek_multiturn.py").is_file():
        raise UserError(f"--root {root}: no recipes/deepseek_multiturn.py there")
    # What the user's shell has, without a wait policy or spin count: the recipe decides (default) or the case does.
    base_env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    flags = ["--load-in-4bit"] if args.load_in_4bit else []
    beside = f" and beside {args.neighbours} busy torch processes" if args.neighbours else ""
    print(f"{root}: {args.steps} steps of the tiny run{', 4-bit' if flags else ''}; {os.cpu_count()} CPU cores; "
          f"alone{beside}; {args.repeat} runs each", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"root": str(root), "steps": args.steps, "four_bit": bool(flags), "cpus": os.cpu_count(), "runs": []}
    runs = record["runs"]
    for _ in range(args.repeat):  # interleaved, so a change in the machine's load touches every case alike
        for policy in policies:
            for neighbours in sorted({0, args.neighbours}):
                run = one_run(root, policy, neighbours, args.steps, flags, base_env)
                runs.append(run)
                (out / "results.json").write_text(json.dumps(record, indent=1))  # kept if a later run is stopped
                print(f"  {policy:8} {neighbours} busy: trained in {run['train_s']:6.1f} s (run {run['run_s']:5.1f} s)"
                      f"  load {run['load_1min_at_start']:.2f} -> {run['load_1min_at_end']:.2f}", flush=True)
    summary = {}
    print("\n| policy | alone (s) | beside busy (s) | busy / alone |\n|---|---:|---:|---:|")
    for policy in policies:
        alone = statistics.median(r["train_s"] for r in runs if r["policy"] == policy and not r["neighbours"])
        summary[policy] = {"alone_s": alone}
        beside = "- | -"
        if args.neighbours:
            busy = statistics.median(r["train_s"] for r in runs if r["policy"] == policy and r["neighbours"])
            summary[policy].update(busy_s=busy, busy_over_alone=busy / alone)
            beside = f"{busy:.1f} | {busy / alone:.1f}x"
        print(f"| {policy} | {alone:.1f} | {beside} |")
    if args.neighbours and "default" in summary and "PASSIVE" in summary:
        ratio = summary["default"]["busy_s"] / summary["PASSIVE"]["busy_s"]
        print(f"\nbeside busy processes, default / PASSIVE by hand: {ratio:.2f}x")
        summary["busy_default_over_passive"] = ratio
    record["summary"] = summary
    (out / "results.json").write_text(json.dumps(record, indent=1))
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    sys.excepthook = report_user_errors
    main()

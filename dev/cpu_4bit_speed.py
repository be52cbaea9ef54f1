"""Tokens/s of every recipe and LoRA variant on its tiny model, in 4-bit (bitsandbytes' CPU backend) and in float32,
on this machine's CPU (the vision recipe: seconds per step). A developer's measurement, printed as the table in
docs/four-bit-on-cpu.md; not a test.

    python dev/cpu_4bit_speed.py                 # 12 steps each, sequences cut at 256 tokens
    python dev/cpu_4bit_speed.py --steps 24

Each run is its own process, one at a time, so that no two share the cores. The numbers are
the recipes' own "trained N steps in S s (T tokens/s)" line: real (unpadded) tokens over the training loop's time.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUANACO = ["--train-file", "datasets/guanaco_style/train.jsonl", "--eval-file", "datasets/guanaco_style/test.jsonl"]
ADALORA = ["--adalora", "--init-r", "6", "--target-r", "2", "--tinit", "2", "--tfinal", "3"]
RUNS = [  # (recipe, variant, flags)
    ("deepseek_multiturn", "LoRA", []),
    ("llama_text", "LoRA, instructions", []),
    ("llama_text", "LoRA, Guanaco text", GUANACO),
    ("llama_text", "rsLoRA", ["--use-rslora"]),
    ("llama_text", "DoRA", ["--use-dora"]),
    ("llama_text", "AdaLoRA", ADALORA),
    ("llama_text", "LoftQ", ["--init", "loftq"]),
    ("llama_vision", "LoRA", []),
    ("mt0_seq2seq", "LoRA", []),
]
# mt0 counts input tokens; the vision recipe prints no tokens/s (its images are not tokens): seconds per step there.
SPEED = re.compile(r"trained (\d+) steps in ([\d.]+) s(?: \(([\d,]+) (input )?tokens/s\))?")


def tokens_per_s(recipe: str, flags: list[str], four_bit: bool, steps: int) -> str:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, f"recipes/{recipe}.py", "--model", "tiny", "--max-steps", str(steps),
                   "--eval-prompts", "0", "--output-dir", out, *flags,
                   "--load-in-4bit" if four_bit else "--no-load-in-4bit"]
        if recipe != "mt0_seq2seq":  # mt0 keeps the article's 256 already
            command += ["--max-seq-length", "256"]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    found = SPEED.search(result.stdout)
    if result.returncode or not found:
        return f"failed ({(result.stderr.strip().splitlines() or ['?'])[-1][:80]})"
    steps_done, seconds, rate, inputs = found.groups()
    if rate:
        return rate + (" (input)" if inputs else "")
    return f"{float(seconds) / int(steps_done):.2f} s/step"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    print(f"{args.steps} steps each, {os.cpu_count()} CPU cores")
    print("| recipe | variant | tokens/s, 4-bit | tokens/s, float32 |")
    print("|---|---|---:|---:|")
    for recipe, variant, flags in RUNS:
        four, full = (tokens_per_s(recipe, flags, four_bit, args.steps) for four_bit in (True, False))
        print(f"| `{recipe}.py` | {variant} | {four} | {full} |", flush=True)


if __name__ == "__main__":
    main()

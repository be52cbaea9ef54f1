"""Will a LoRA run fit the GPU? Predict its peak memory from the model's config, before downloading weights.

    python scripts/plan_memory.py --model unsloth/Meta-Llama-3.1-8B-Instruct --gpu t4
    python scripts/plan_memory.py --model llama-3.1-8b --gpu t4 --no-load-in-4bit  # does not fit: says what does
    python scripts/plan_memory.py --model path/to/config.json --gpu 24gb --max-seq-length 8192 --r 64
    python scripts/plan_memory.py --model unsloth/Meta-Llama-3.1-70B-Instruct --gpu 24gb --gpus 4 --fsdp
    python scripts/plan_memory.py --check-references                               # the model against measurements

--model is a bundled arch (llama-3.1-8b, llama-3.2-3b, deepseek-llm-7b, deepseek-r1-distill-qwen-1.5b,
llama-3.2-11b-vision; their hub ids too), a config.json, a local model directory, or another hub id (only its
config.json is downloaded).
The flags are the recipes' own (--max-seq-length, --batch-size, --r, --load-in-4bit). The estimate's constants
were fitted to five measured peaks; treat it as about ±15% (see common/memory_plan.py).
Exit code 0 when it fits, 1 when it does not, 2 for a bad argument.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common.startup  # noqa: E402, F401  before torch loads: how long idle threads spin (common/startup.py)
from common.errors import report_user_errors  # noqa: E402
from common.memory_plan import GPUS, check_references, plan_memory  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unsloth/Meta-Llama-3.1-8B-Instruct")
    parser.add_argument("--gpu", default=None, help=f"{' | '.join(GPUS)} | a size in GiB (default: this machine's GPU, "
                                                    "or a T4 without one)")
    parser.add_argument("--max-seq-length", "--max_seq_length", dest="seq", type=int, default=2048,
                        help="max sequence length (default 2048)")
    parser.add_argument("--r", type=int, default=16, help="LoRA rank (default 16)")
    parser.add_argument("--batch-size", "--batch_size", dest="batch", type=int, default=2,
                        help="examples per forward pass (default 2)")
    parser.add_argument("--no-load-in-4bit", "--16bit", dest="sixteen_bit", action="store_true",
                        help="16-bit base weights, not 4-bit (a recipe's --no-load-in-4bit)")
    parser.add_argument("--optim", default="8bit", choices=["8bit", "32bit"], help="Adam states (default 8bit)")
    parser.add_argument("--method", default="unsloth", choices=["unsloth", "hf"],
                        help="unsloth (the recipes) or hf (plain transformers + PEFT, padded batches)")
    parser.add_argument("--images", type=int, default=None, help="images per example, vision models (default 1)")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs (processes) the run uses; the plan is per GPU")
    parser.add_argument("--fsdp", action="store_true", help="with --gpus: FSDP shards the model over them "
                        "(configs/fsdp_qlora.yaml); without it each GPU holds a whole copy (DDP)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--check-references", action="store_true", help="predictions against measured peaks")
    args = parser.parse_args(argv)

    if args.check_references:
        print("| reference | measured GiB | predicted GiB | error |\n|---|---:|---:|---:|")
        for row in check_references():
            print(f"| {row['reference']} | {row['measured_gib']:.2f} | {row['predicted_gib']:.2f} | "
                  f"{row['error_pct']:+.1f}% |")
        return 0
    plan = plan_memory(args.model, gpu=args.gpu, seq=args.seq, r=args.r, batch=args.batch,
                       load_in_4bit=not args.sixteen_bit, optim=args.optim, method=args.method,
                       images=1 if args.images is None else args.images, gpus=args.gpus, fsdp=args.fsdp)
    print(json.dumps(plan.as_dict(), indent=1) if args.json else plan.summary())
    return 0 if plan.fits else 1


if __name__ == "__main__":
    sys.excepthook = report_user_errors
    sys.exit(main())

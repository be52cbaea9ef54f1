"""Export a finished run: its LoRA adapter, the model merged in 16-bit, or GGUF files for llama.cpp and Ollama.

    python scripts/export.py runs/deepseek_multiturn --to adapter        # copy of the LoRA adapter + tokenizer
    python scripts/export.py runs/deepseek_multiturn --to merged16       # plain transformers model, 16-bit
    python scripts/export.py runs/deepseek_multiturn --to gguf --quant f16,q8_0,q4_k_m --verify

Everything goes to RUN_DIR/export/ (--out DIR to choose): adapter/, merged16/, gguf/RUN-QUANT.gguf and an Ollama
gguf/RUN-QUANT.Modelfile beside each GGUF (`ollama create my-model -f gguf/RUN-q4_k_m.Modelfile`).
--to gguf merges first (or reuses a merged16/ made from this same adapter) and always writes f16, the quantizer's
input; llama.cpp loads every GGUF back (vocabulary, special tokens, one forward pass) before it gets its name.
A 4-bit (QLoRA) run is merged onto its 4-bit layers as it trained on them, dequantized: the weights its adapter
learned to correct (--merge-onto original: onto the 16-bit weights they were quantized from instead).
--verify first checks that merged16 keeps the fine-tune: its held-out loss per assistant token on the run's
held-out conversations (run_config.json's eval_file) against the trained model's and the base's, which the recipe
measured after training; an export that lost more than 2% of the improvement stops with exit code 2, files kept.
With --to gguf it then loads each GGUF with llama.cpp and merged16 with transformers, renders those conversations
with each side's own chat template, and prints whether the prompt token ids match and how often the greedy tokens
agree. An existing export is only replaced with --overwrite, and one made from another adapter (another run, or
this one before --resume trained it further) is never reused.
"""
import argparse
import sys

import common.startup  # noqa: F401  before torch loads: how long idle threads spin (common/startup.py)
from common.errors import report_user_errors
from common.export import MERGE_ONTO, QUANTS, TARGETS, export_run, export_target
from common.smollm2 import SMOLLM2


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a finished run: the directory holding adapter/ and run_config.json")
    parser.add_argument("--to", required=True, choices=TARGETS, type=export_target,
                        help="what to export (no 4-bit merge: merged16, then --to gguf --quant q4_k_m)")
    parser.add_argument("--quant", default="f16,q8_0,q4_k_m",
                        help=f"GGUF types, comma-separated, from {', '.join(QUANTS)} (default: all three)")
    parser.add_argument("--out", default=None, help="where to write (default: RUN_DIR/export; not the run itself, "
                        "its adapter/ or a checkpoint)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export")
    parser.add_argument("--verify", action="store_true", help="merged16 keeps the fine-tune (held-out loss against "
                        "the trained model's); with --to gguf also the token parity of llama.cpp with transformers")
    parser.add_argument("--base", default=None, help="the 16-bit base model to merge into (default: the adapter's "
                        f"base, -bnb-4bit dropped; {SMOLLM2} for the built-in SmolLM2)")
    parser.add_argument("--merge-onto", choices=MERGE_ONTO, default="trained",
                        help="a 4-bit run: trained (default) merges onto its 4-bit layers as it trained on them, "
                        "original onto the 16-bit weights they were quantized from")
    args = parser.parse_args(argv)
    export_run(args.run_dir, args.to, args.quant, out_dir=args.out, overwrite=args.overwrite, verify=args.verify,
               base=args.base, merge_onto=args.merge_onto)


if __name__ == "__main__":
    sys.excepthook = report_user_errors
    main()

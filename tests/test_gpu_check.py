"""dev/gpu_check on a CPU with the tiny models, so the GPU check cannot rot between the rare GPU runs: every part
runs and reports, in 4-bit as on a GPU, and what a CPU cannot check says so. And dev/recipe_probe.py's batch check,
on padding-free batches built the way TRL's collator and Unsloth build them on a GPU."""
import json
import math
import re
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, run
from dev.gpu_check import plan
from dev.gpu_check.context import Context
from dev.gpu_check.recipes import plan_for, t4_items
from dev.gpu_check.report import report_markdown
from dev.gpu_check.runners import RUNNERS

CORE = ["core-recipe", "core-unsloth", "core-hf"]
RECIPES = ["recipe-deepseek", "recipe-llama", "recipe-llama-2k", "recipe-vision", "recipe-r1-qwen"]
T4 = ["t4-deepseek", "t4-llama", "t4-vision"]


@pytest.fixture(scope="module")
def cpu_check(tmp_path_factory):
    """`--only core`, then the rest into the same OUT, as runs in parts are made: one report, and the CPU run of
    recipe-deepseek reuses core-recipe's (the same command) instead of training it again."""
    out = tmp_path_factory.mktemp("gpu_check")
    core = run(["dev/gpu_check", "--out", out, "--device", "cpu", "--only", "core"], timeout=900)
    assert core.returncode == 0, core.stdout[-4000:] + core.stderr[-3000:]
    core_results = json.loads((out / "results.json").read_text())
    result = run(["dev/gpu_check", "--out", out, "--device", "cpu", "--only", "recipes,t4,speed,export"],
                 timeout=1500)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text()), (out / "report.md").read_text(), result.stdout, \
        core_results, core.stdout


def items(row) -> dict:
    return {i["name"]: i for i in row["items"]}


def test_it_writes_the_report_the_results_and_the_logs(cpu_check):
    out, results, report, stdout, _, core_stdout = cpu_check
    assert set(results["checks"]) == set(CORE + RECIPES + T4 + ["speed-fixed", "speed-mixed", "export-4bit"])
    for heading in ("## Summary", "## 0. Core", "## 1. Every recipe end to end", "## 2. T4 mode",
                    "## 3. Speed against the anchors", "## 4. Export from a 4-bit run"):
        assert heading in report, heading
    assert (out / "logs.tar.gz").stat().st_size > 1000
    assert [r["device"] for r in results["meta"]["runs"]] == ["cpu", "cpu"]
    assert results["meta"]["runs"][0]["versions"]["torch"]
    assert "summary: 3 passed, 0 failed, 0 not applicable or skipped" in core_stdout
    assert "summary: 8 passed, 0 failed, 3 not applicable or skipped" in stdout
    assert "| core-recipe | core | PASS |" in report and "planned on one H100 (estimate)" in report
    # the references are labelled as such, never as this run's numbers
    assert "Reference, not measured by this script" in report and "9,696 tokens/s" in report


def test_every_recipe_trains_with_a_falling_finite_loss(cpu_check):
    _, results, *_ = cpu_check
    for check in RECIPES:
        row = results["checks"][check]
        assert row["status"] == "pass", (check, row["items"])
        found = items(row)
        assert found["ran"]["ok"] and found["loss finite"]["ok"] and found["loss falls"]["ok"], check
        losses = row["metrics"]["losses"]
        assert len(losses) == 3 and all(math.isfinite(x) for x in losses) and losses[-1] < losses[0], (check, losses)
        assert row["metrics"]["tokens_per_s"] > 0


def test_no_padded_or_masked_token_is_trained_and_padding_free_is_not_claimed_on_cpu(cpu_check):
    _, results, *_ = cpu_check
    for check in RECIPES:
        found = items(results["checks"][check])
        labels = found["labels: only real trained tokens"]
        assert labels["ok"] and "0 wrong, 0 on padding" in labels["detail"], (check, labels)
        assert results["checks"][check]["metrics"]["batches"]["trained_positions"] > 0
        padding_free = found["padding-free"]
        assert padding_free["ok"] is None and "not applicable" in padding_free["detail"], check
        assert ("not applicable on CPU" in padding_free["detail"]) == (check != "recipe-vision")
        assert found["memory vs plan"]["ok"] is None and "not applicable on CPU" in found["memory vs plan"]["detail"]
    assert items(results["checks"]["recipe-llama-2k"])["fills 256 tokens"]["ok"]


def test_recipes_run_the_4bit_path_on_cpu(cpu_check):
    """--load-in-4bit on a CPU too: bitsandbytes Linear4bit layers in the model the recipe trained (the vision recipe's
    transformers + PEFT path included), and the recipe said so."""
    _, results, *_ = cpu_check
    for check in RECIPES:
        row = results["checks"][check]
        four_bit = items(row)["4-bit"]
        assert four_bit["ok"] and "bitsandbytes Linear4bit layers (nf4, double quantisation)" in four_bit["detail"]
        assert "4-bit" in four_bit["detail"].split("the recipe printed:")[1], four_bit
        assert row["metrics"]["four_bit"]["linear4bit_layers"] > 0 and row["metrics"]["four_bit"]["load_in_4bit"]
        assert "--load-in-4bit" in Path(row["log"]).read_text().splitlines()[0]  # the command, as the log shows it


def test_adapters_are_saved_as_trained_and_reload_with_identical_logits(cpu_check):
    """4-bit on a CPU too: transformers + PEFT on the same nf4 base, its layers and LoRA weights computing as the run's
    did (recipe_probe.cpu_4bit_as_trained), gives the in-memory model's logits exactly."""
    _, results, *_ = cpu_check
    for check in RECIPES:
        assert items(results["checks"][check])["adapter saved = in memory"]["ok"], check
    for check in ("recipe-deepseek", "recipe-vision", "recipe-r1-qwen"):
        reload = items(results["checks"][check])["adapter reloads (transformers + PEFT)"]
        assert reload["ok"] and "logits identical" in reload["detail"], (check, reload)
        assert results["checks"][check]["metrics"]["reload"]["peft"]["adapter_effect_max_abs"] > 0  # not vacuous
    assert "in 4-bit" in items(results["checks"]["recipe-deepseek"])["adapter reloads (transformers + PEFT)"]["detail"]


def test_core_gives_the_recipe_beside_raw_unsloth_and_hf_peft(cpu_check):
    """`--only core` alone: the three core rows with tokens/s and peak memory, all three in 4-bit, on the same examples
    (the recipe's own prepared train set) and shape."""
    out, results, report, _, core_results, _ = cpu_check
    assert set(core_results["checks"]) == set(CORE)
    shapes = set()
    for check in CORE:
        row = core_results["checks"][check]
        assert row["status"] == "pass", (check, row["items"])
        m = row["metrics"]
        assert m["tokens_per_s"] > 0 and m["trained_tokens_per_s"] > 0 and m["median_step_s"] > 0, (check, m)
        assert m["peak_gib"] > 0 and m["peak_kind"] == "process peak RSS", (check, m)
        found = items(row)
        assert found["4-bit"]["ok"] and found["ran"]["ok"] and found["loss finite"]["ok"], (check, found)
        assert "tokens/s" in found["tokens/s and peak memory"]["detail"]
        shapes.add(json.dumps(m["shape"], sort_keys=True))
    assert len(shapes) == 1  # the same batch, length, rank and steps for the three
    recipe = core_results["checks"]["core-recipe"]["metrics"]
    assert recipe["examples_count"] >= 2 and Path(recipe["examples"]).is_file()
    assert "nf4" in core_results["checks"]["core-unsloth"]["metrics"]["dtype"]
    assert "nf4" in core_results["checks"]["core-hf"]["metrics"]["dtype"]
    assert "the recipe vs transformers + PEFT" in " ".join(items(core_results["checks"]["core-hf"]))
    assert "| recipes/deepseek_multiturn.py (4-bit) |" in report and "| raw Unsloth (all tokens trained), 4-bit |" \
        in report
    # on a CPU, recipe-deepseek is core-recipe's run (the same command), not trained a second time
    assert "core-recipe's run: the same command, reused" in items(results["checks"]["recipe-deepseek"])["ran"]["detail"]
    assert not (out / "work" / "logs" / "recipe-deepseek.log").exists()


def test_t4_mode_on_cpu_gives_the_planners_verdicts_only(cpu_check):
    _, results, *_ = cpu_check
    for check in T4:
        row = results["checks"][check]
        assert row["status"] == "n/a"
        found = items(row)
        assert "fits 14.74 GiB" in found["planner (T4)"]["detail"], found["planner (T4)"]
        assert "not applicable on CPU" in found["outcome"]["detail"]
        assert row["metrics"]["plan_t4_fits"] is True


def test_speed_runs_the_benchmark_and_leaves_the_targets_to_a_gpu(cpu_check):
    _, results, report, *_ = cpu_check
    for check in ("speed-fixed", "speed-mixed"):
        row = results["checks"][check]
        found = items(row)
        assert row["status"] == "pass" and found["ran"]["ok"] and found["first losses agree"]["ok"], row["items"]
        assert found["targets"]["ok"] is None and "not applicable on CPU" in found["targets"]["detail"]
        assert found["4-bit"]["ok"], found["4-bit"]
        assert row["metrics"]["runs"][0]["tokens_per_s"] > 0
    assert {r["run"] for r in results["checks"]["speed-fixed"]["metrics"]["runs"]} == {"recipe", "hf"}
    assert "| recipe (Unsloth, its own batching) | float32 + nf4 |" in report
    assert "| HF + PEFT, padded batches | float32 + nf4 |" in report


def test_export_merges_converts_and_matches_llama_cpp(cpu_check):
    _, results, *_ = cpu_check
    row = results["checks"]["export-4bit"]
    assert row["status"] == "pass", row["items"]
    found = items(row)
    # a 4-bit run (recipe-deepseek's: the tiny model loaded in 4-bit) merged into its unquantized base
    assert found["4-bit run trained"]["ok"] and "Linear4bit" in found["4-bit run trained"]["detail"]
    # every prompt of the run's own eval file (its size depends on the data) tokenizes identically
    matched = re.search(r"prompt ids match (\d+)/(\d+)", found["parity f16"]["detail"])
    assert found["parity f16"]["ok"] and matched and matched[1] == matched[2] and int(matched[2]) >= 2
    assert found["scripts/export.py --to merged16 --base"]["ok"]
    assert "not applicable on CPU" in found["16-bit base from the -bnb-4bit name"]["detail"]
    steps = {s["step"]: s for s in row["metrics"]["export"]["steps"]}
    assert {"merged16", "f16", "parity"} <= set(steps)
    assert all(s["seconds"] >= 0 and s["peak_host_gib"] > 0 for s in steps.values())


def test_merge_makes_one_report_from_runs_in_parts(cpu_check, tmp_path):
    out, results, *_ = cpu_check
    part = tmp_path / "part.json"
    part.write_text(json.dumps({"meta": {"runs": results["meta"]["runs"]},
                                "checks": {"speed-fixed": results["checks"]["speed-fixed"]}}))
    merged = run(["dev/gpu_check", "--out", tmp_path / "merged", "--merge", out / "results.json", part],
                 timeout=120)
    assert merged.returncode == 0, merged.stderr[-2000:]
    again = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert set(again["checks"]) == set(results["checks"])
    assert len(again["meta"]["runs"]) == 2 * len(results["meta"]["runs"])  # both files' runs (core, then the rest)
    assert "## 3. Speed against the anchors" in (tmp_path / "merged" / "report.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--only", "recipes,warp"], "error: --only warp: choose groups (core, deepseek, llama, speed, vision, r1-qwen), "
                                 "parts (core, recipes, t4, speed, export) or checks"),
    (["--max-steps", "0"], "error: --max-steps 0: must be positive"),
    (["--device", "tpu"], "error: argument --device: invalid choice: 'tpu'"),
    (["--merge", "nothing.json"], "error: --merge nothing.json: not a results.json of dev/gpu_check"),
])
def test_a_bad_argument_is_one_line(args, message, tmp_path):
    result = run(["dev/gpu_check", "--out", tmp_path / "out", *args], timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr[-1000:]
    assert "Traceback" not in result.stderr


def test_help_lists_every_group_and_part_with_its_planned_time():
    result = run(["dev/gpu_check", "--help"], timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in [*plan.GROUPS, *plan.PARTS]:
        line = re.search(rf"^  {re.escape(name)} +~(\d+) min on one H100 \(estimate, incl\. [^)]*model build",
                         result.stdout, re.M)
        assert line, (name, result.stdout[-3000:])
    assert re.search(r"^  core +~\d+ min on one H100 \(estimate, incl\. the offline wheel install and model build\)",
                     result.stdout, re.M)
    assert "ESTIMATES, not measurements" in result.stdout


def test_the_planned_times_fit_short_gpu_access():
    """core within 6 minutes on one H100 with the wheel install; every other group within 8 (planned: estimates)."""
    assert plan.planned_seconds(plan.GROUPS["core"], install=True) <= plan.CORE_LIMIT_S == 360
    for name, ids in plan.GROUPS.items():
        assert plan.planned_seconds(ids) <= plan.GROUP_LIMIT_S == 480, name
    # the groups split the checks: each check in exactly one group, in the order the checks run
    grouped = [i for ids in plan.GROUPS.values() for i in ids]
    assert grouped == [c.id for c in plan.CHECKS]
    assert set(plan.PLANNED_S) == set(plan.BY_ID)


def test_only_selects_groups_parts_and_checks():
    ids = lambda only: [c.id for c in plan.select(only)]  # noqa: E731
    assert ids("core") == ["core-recipe", "core-unsloth", "core-hf"]
    assert ids("llama") == ["recipe-llama", "recipe-llama-2k", "t4-llama"]
    assert ids("r1-qwen") == ["recipe-r1-qwen", "export-4bit"]
    assert ids("recipes") == RECIPES[:3] + ["recipe-vision", "recipe-r1-qwen"]
    assert ids("t4-llama,speed") == ["t4-llama", "speed-fixed", "speed-mixed"]


def test_the_offline_wheels_script_is_documented_and_parses():
    """dev/offline_wheels.sh (nothing is downloaded here): valid bash, and the docs give its install command."""
    script = ROOT / "dev" / "offline_wheels.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    for package in ("unsloth==2026.10.9", "unsloth_zoo==2026.10.9", "trl==1.15.0", "datasets==4.8.5",
                    "bitsandbytes==0.50.2"):
        assert package in text, package
    install = "python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl"
    assert install in text
    for readme in ("docs/development-and-gpu-checking.md", "docs/zh-CN/development-and-gpu-checking.md"):
        section = (ROOT / readme).read_text()
        assert "bash dev/offline_wheels.sh" in section and install in section, readme


# ------------------------------------------------------------------ the probe's batch check

@pytest.fixture
def probe():
    from dev import recipe_probe
    return recipe_probe


def hooked(probe, examples):
    import torch

    class Trainer:
        train_dataset = {"input_ids": [e["input_ids"] for e in examples], "labels": [e["labels"] for e in examples]}

    log = probe.BatchLog()
    log.trainers.append(Trainer)
    module = torch.nn.Linear(1, 1)
    module.train()
    return log, module


EXAMPLES = [{"input_ids": [1, 5, 6, 7], "labels": [-100, -100, 6, 7]}, {"input_ids": [1, 8, 9], "labels": [-100, 8, 9]},
            {"input_ids": [1, 4, 4, 4, 3], "labels": [-100, -100, -100, 4, 3]}]


def test_the_probe_recognises_padding_free_batches_and_checks_every_label(probe):
    """A batch as TRL's padding-free collator builds it, with the packed_seq_lengths Unsloth adds on a GPU."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    log, module = hooked(probe, EXAMPLES)
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(EXAMPLES[:2])
    batch["packed_seq_lengths"] = torch.tensor([4, 3], dtype=torch.int32)
    assert batch["input_ids"].shape == (1, 7) and "attention_mask" not in batch
    log.hook(module, (), batch)
    summary = log.summary()
    assert summary["padding_free"] and summary["labels_ok"], summary
    assert summary["trained_positions"] == 4 and summary["sequences"] == 2 and summary["padded_positions"] == 0
    assert summary["first_forwards"][0]["sequence_lengths"] == [4, 3]

    module.eval()  # evaluation batches are counted, not checked
    log.hook(module, (), batch)
    assert log.summary()["other_forwards"] == 1


def test_the_probe_catches_a_trained_prompt_token_padding_or_boundary(probe):
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    packed = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(EXAMPLES[:2])
    for position, what in ((1, "wrong_labels"), (4, "trained_boundaries")):  # a masked prompt token; example 2's start
        log, module = hooked(probe, EXAMPLES)
        bad = {**packed, "labels": packed["labels"].clone()}
        bad["labels"][0, position] = bad["input_ids"][0, position]
        log.hook(module, (), bad)
        summary = log.summary()
        assert not summary["labels_ok"] and summary[what] == 1, (what, summary)

    padded = DataCollatorForLanguageModeling(pad_token_id=0)(EXAMPLES)  # rows padded to 5, with an attention mask
    log, module = hooked(probe, EXAMPLES)
    log.hook(module, (), padded)
    summary = log.summary()
    assert summary["labels_ok"] and not summary["padding_free"] and summary["padded_positions"] == 3
    log, module = hooked(probe, EXAMPLES)
    bad = {**padded, "labels": padded["labels"].clone()}
    bad["labels"][1, 4] = 0  # the padding of row 1 trained
    log.hook(module, (), bad)
    assert log.summary()["trained_padding"] == 1 and not log.summary()["labels_ok"]

    log, module = hooked(probe, EXAMPLES)
    log.hook(module, (), {"input_ids": torch.tensor([[1, 2, 3]]), "labels": torch.tensor([[-100, 2, 3]]),
                          "attention_mask": torch.ones(1, 3, dtype=torch.long)})
    assert log.summary()["unknown_sequences"] == 1  # a sequence that is no training example


# ------------------------------------------------------------------ the random-weight models (at a tiny size here)

def shrunk(config: dict) -> dict:
    """A bundled config at a size a CPU builds in a second: the real vocabulary and special ids, tiny layers."""
    small = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16)
    if "text_config" in config:
        config["text_config"].update(small, num_hidden_layers=2, cross_attention_layers=[1])
        config["vision_config"].update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_global_layers=1,
                                       attention_heads=2, intermediate_layers_indices=[0], vision_output_dim=64)
        return config
    return {**config, **small}


@pytest.fixture
def small_configs(tmp_path, monkeypatch):
    from dev import random_models
    configs = tmp_path / "configs"
    configs.mkdir()
    for arch in ("llama-3.1-8b", "deepseek-r1-distill-qwen-1.5b", "llama-3.2-11b-vision"):
        config = json.loads((ROOT / "benchmarks" / "configs" / f"{arch}.json").read_text())
        (configs / f"{arch}.json").write_text(json.dumps(shrunk(config)))
    monkeypatch.setattr(random_models, "CONFIGS", configs)
    return random_models, tmp_path / "cache"


def test_a_random_text_model_has_the_real_tokenizer_and_loads(small_configs):
    import torch
    from transformers import AutoModelForCausalLM

    from common.tokenizer import load_tokenizer
    random_models, cache = small_configs
    path = random_models.random_text_model("llama-3.1-8b", cache, device="cpu")
    assert path.name == "random-llama-3.1-8b-llama-3.1-8b-instruct"
    assert random_models.random_text_model("llama-3.1-8b", cache, device="cpu") == path  # built once
    tokenizer = load_tokenizer(path)
    assert len(tokenizer) == 128256 and tokenizer.convert_tokens_to_ids("<|eot_id|>") == 128009
    assert "<|start_header_id|>" in tokenizer.chat_template
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.dtype == torch.bfloat16 and model.config.vocab_size == 128256
    assert json.loads((path / "random_model.json").read_text())["random_weights"]
    assert not list(cache.glob(".building-*"))
    random_models.remove(path)
    assert not path.exists()


def test_the_vision_processor_is_the_real_models(small_configs):
    """The 11B Vision's processor rebuilt offline: Llama 3.1's vocabulary with <|image|> as id 128256, 560-pixel
    tiles, up to 4, and a batch of the bundled images through the recipe's collator and a model of that layout."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from common.data import load_conversations
    from common.labels import build_dataset
    from common.tiny.vision import LLAMA32_VISION_TEMPLATE
    from common.vision import MllamaCollator, build_vision_examples, label_tokenizer, to_vision_messages
    random_models, cache = small_configs
    path = random_models.random_vision_model(cache, device="cpu")
    processor = AutoProcessor.from_pretrained(path)
    tokenizer = label_tokenizer(processor)
    assert tokenizer.convert_tokens_to_ids("<|image|>") == 128256 and len(tokenizer) == 128257
    assert processor.chat_template == LLAMA32_VISION_TEMPLATE
    image = processor.image_processor
    assert (image.size, image.max_image_tiles, image.resample) == ({"height": 560, "width": 560}, 4, 2)
    conversations = load_conversations(ROOT / "datasets/vision/train.jsonl", parse=to_vision_messages).conversations[:2]
    examples, stats = build_dataset(tokenizer, conversations, "all_turns", 2048, source="train.jsonl",
                                    examples_of=build_vision_examples)
    assert stats["images"] == 2 and stats["trained_tokens"] > 0
    tokenizer.pad_token = "<|finetune_right_pad_id|>"
    batch = MllamaCollator(processor, tokenizer.pad_token_id, torch.float32)(examples)
    assert batch["pixel_values"].shape[-3:] == (3, 560, 560) and batch["pixel_values"].shape[2] == 4
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    assert model.config.image_token_index == 128256
    assert model.get_input_embeddings().num_embeddings > 128256  # Mllama's vocab + 8 rows: <|image|> has one
    with torch.no_grad():
        assert math.isfinite(float(model(**batch).loss))


# ------------------------------------------------------------------ the GPU rows, from recorded runs

def fake_gpu_context(tmp_path, monkeypatch):
    """dev/gpu_check's Context in GPU mode whose subprocesses are replaced by what a GPU run records, so the GPU side of
    the rows and the report is checked here (a GPU hour is too rare to find a KeyError there)."""
    import argparse

    from dev.real_tokenizers import tokenizer_dir
    args = argparse.Namespace(device="cuda", out=tmp_path / "out", work=None, cache=None, keep_models=True,
                              max_steps=None, t4_steps=5, time_limit=None)
    ctx = Context(args)
    ctx.gpu = {"name": "NVIDIA H200", "total_gib": 139.8}
    # the real configs and tokenizers stand in for the random-weight models (they hold config.json and tokenizer.json)
    ctx.models = {group: str(tokenizer_dir(family)) for group, (_, family) in plan.MODELS.items()}
    calls = []

    def run(name, command, timeout=0):
        command = [str(c) for c in command]
        calls.append(command)
        text, rc = "", 0
        if "--record" in command:  # a recipe through the probe
            record = Path(command[command.index("--record") + 1])
            t4 = "--t4" in command
            run_dir = Path(command[command.index("--output-dir") + 1])
            run_dir.mkdir(parents=True, exist_ok=True)
            losses = [12.0 - 0.1 * i for i in range(20)]
            (run_dir / "log_history.json").write_text(json.dumps(
                [{"loss": x, "num_tokens": 1000 * (i + 1)} for i, x in enumerate(losses)]))
            (run_dir / "eval.json").write_text(json.dumps({"training": {"seconds": 10.0, "peak_gpu_gib": 6.3,
                                                                        "median_step_seconds": 0.5}}))
            fill = any("-long.jsonl" in c for c in command)
            vision = "recipes/llama_vision.py" in command
            width = 2048 if fill else 700
            batches = {"training_forwards": 80, "other_forwards": 4, "sequences": 160, "real_tokens": 80 * width,
                       "padded_positions": 300 if vision else 0, "trained_positions": 50000, "lost_labels": 0,
                       "unknown_sequences": 0, "wrong_labels": 0, "trained_padding": 0, "trained_boundaries": 0,
                       "one_row_packed": 0 if vision else 80, "one_row_no_mask": 0 if vision else 80,
                       "max_tokens_per_forward": 2 * width, "max_rows": 2 if vision else 1,
                       "max_width": 60 if vision else 2 * width, "min_sequence_length": width if fill else 100,
                       "max_sequence_length": width, "labels_ok": True, "padding_free": not vision, "problems": [],
                       "first_forwards": [{"rows": 2 if vision else 1, "width": 60 if vision else 2 * width,
                                           "attention_mask": vision, "sequence_lengths": [width, width]}]}
            batches["steps"] = [{"seconds": 2.0 if i < 3 else 1.0, "tokens": 8 * width, "trained": 6 * width}
                                for i in range(10)]
            data = {"ok": True, "run_dir": str(run_dir), "batches": batches, "peak_rss_gib": 20.0,
                    "trainer": {"bf16": not t4, "fp16": t4, "padding_free": not vision},
                    "model": {"dtype": "float16" if t4 else "bfloat16", "attention": "sdpa", "load_in_4bit": True,
                              "linear4bit_layers": 224, "quantization": {"quant_method": "bitsandbytes",
                                                                         "bnb_4bit_quant_type": "nf4",
                                                                         "bnb_4bit_use_double_quant": True}},
                    "t4": {"cap_gib": 14.29} if t4 else None}
            if "--dump-train" in command:  # core-recipe: the examples the baselines train on
                dump = Path(command[command.index("--dump-train") + 1])
                dump.write_text(json.dumps([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}]))
                data["dumped_train"] = {"path": str(dump), "examples": 1}
            if not t4:
                data["adapter_tensors"] = {"ok": True, "tensors": 448, "saved_dtypes": ["float32"], "n_different": 0}
                data["reload_inputs"] = {"path": "x"}
            record.write_text(json.dumps(data))
            text = ("loading x: 6,910M parameters, dtype bfloat16, 4-bit nf4 with double quantisation (QLoRA)\n"
                    "🦥 Unsloth: Padding-free auto-enabled, enabling faster training.")
        elif "--reload" in command:
            record = Path(command[command.index("--reload") + 1])
            data = json.loads(record.read_text())
            loader = command[command.index("--loader") + 1]
            data.setdefault("reload", {})[loader] = {
                "ok": True, "identical": loader == "unsloth", "max_abs_diff": 0.0 if loader == "unsloth" else 0.02,
                "relative_diff": 0.0 if loader == "unsloth" else 0.005, "tolerance": 0.05,
                "loaded_as": "LlamaForCausalLM",
                "quantized": True, "top1_agreement": 1.0, "positions": 256, "adapter_effect_max_abs": 1.5}
            record.write_text(json.dumps(data))
        elif "scripts/benchmark.py" in command:
            out = Path(command[command.index("--out") + 1])
            out.mkdir(parents=True, exist_ok=True)
            kinds = command[command.index("--runs") + 1].split(",") if "--runs" in command else \
                ["recipe", "unsloth", "hf"]
            speed = {"recipe": 9600, "unsloth": 9700, "hf": 5200 if "fixed" in command else 2900}
            runs = [{"run": k, "label": k, "tokens_per_s": speed[k], "trained_tokens_per_s": speed[k] * 0.75,
                     "peak_gib": 7.2 if k != "hf" else 12.0, "padding_pct": 0 if k != "hf" else 40,
                     "dtype": "bfloat16 + nf4", "median_step_s": 1.5, "timed_steps": 7, "peak_kind": "GPU reserved",
                     "first_loss": 12.0, "losses": [12.0, 11.9]} for k in kinds]
            (out / "results.json").write_text(json.dumps({
                "runs": runs, "first_losses": {k: 12.0 for k in kinds if k != "unsloth"}, "first_losses_agree": True,
                "predicted_peak_gib": {k: 7.3 if k != "hf" else 12.0 for k in kinds}}))
            (out / "table.md").write_text("| run | tokens/s |\n")
        elif "--build" in command:  # the NAME-bnb-4bit copy
            text = f"built {command[command.index('--build') + 1].split(':', 1)[1]}-bnb-4bit\n"
        elif "recipes/deepseek_multiturn.py" in command:  # the export's 4-bit run
            text = "loading x: 1,777M parameters, dtype bfloat16, 4-bit nf4 with double quantisation (QLoRA)\n"
            run_dir = Path(command[command.index("--output-dir") + 1])
            (run_dir / "adapter").mkdir(parents=True, exist_ok=True)
            base = command[command.index("--model") + 1]
            (run_dir / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
        elif "--export-worker" in command:
            spec = json.loads(Path(command[command.index("--export-worker") + 1]).read_text())
            (Path(spec["out"]) / "merged16").mkdir(parents=True, exist_ok=True)
            (Path(spec["out"]) / "merged16" / "config.json").write_text(json.dumps({"dtype": "bfloat16"}))
            parity = {"prompts": 5, "prompt_ids_match": 5, "agree": 150, "ties": 4, "total": 160, "identical": 3}
            Path(spec["result"]).write_text(json.dumps({
                "seconds": 60, "parity": {"f16": parity, "q4_k_m": {**parity, "agree": 100}},
                "steps": [{"step": s, "seconds": 5.0, "peak_host_gib": 4.0, "peak_gpu_gib": 3.5}
                          for s in ("merged16", "f16", "q4_k_m", "parity")]}))
        elif "scripts/export.py" in command:
            out = Path(command[command.index("--out") + 1]) / "merged16"
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text("{}")
        return {"rc": rc, "seconds": 1.0, "log": str(ctx.work / "logs" / f"{name}.log"), "text": text, "tail": text}

    monkeypatch.setattr(ctx, "run", run)
    return ctx, calls


def test_gpu_rows_are_built_from_what_the_runs_record(tmp_path, monkeypatch):
    ctx, calls = fake_gpu_context(tmp_path, monkeypatch)
    results = {"meta": {"runs": [{"started": "now", "argv": ["dev/gpu_check"], "device": "cuda",
                                  "gpu": ctx.gpu, "versions": {}, "builds": {}}]}, "checks": {}}
    ctx.rows = results["checks"]
    for check in plan.CHECKS:
        row = RUNNERS[check.run](ctx, check)
        results["checks"][check.id] = {**row, "part": check.part, "title": check.title}
        found = items(row)
        # the recorded peaks are made up (6.3 GiB for every model), so the planner's comparison may fail here
        failed = [i for i in row["items"] if i["ok"] is False and not i["name"].startswith("memory vs plan")]
        assert not failed, (check.id, failed)
        if check.run == "recipe":
            assert "planned" in found["memory vs plan"]["detail"] and "largest batch seen" in found["memory vs plan"][
                "detail"]
        if check.run == "recipe" and not check.options.get("vision"):
            padding_free = found["padding-free"]
            assert padding_free["ok"] and "Unsloth said it enabled padding-free" in padding_free["detail"]
        if check.part == "t4":
            assert found["fp16 and SDPA"]["ok"] and found["planner predicted the outcome"]["ok"]
            assert found["README claim"]["ok"], found["README claim"]
        if check.run in ("recipe", "core") or check.id.startswith("core-"):
            assert found["4-bit"]["ok"], (check.id, found["4-bit"])
        if check.part == "core":
            assert row["metrics"]["tokens_per_s"] > 0 and row["metrics"]["peak_gib"] > 0, check.id
        if check.id == "speed-fixed":
            assert {"recipe within 3% of raw Unsloth", "at least 1.8x HF + PEFT", "at most 0.6x HF + PEFT's memory"} \
                <= set(found)
    recipe = [c for c in calls if "--record" in c and "recipes/llama_text.py" in c and "--t4" not in c][0]
    assert recipe[recipe.index("--learning-rate") + 1] == "1e-3" and "--t4" not in recipe
    t4 = [c for c in calls if "--t4" in c and "recipes/llama_text.py" in c][0]
    assert "--learning-rate" not in t4 and "--batch-size" not in t4 and t4[t4.index("--max-steps") + 1] == "5"
    export = items(results["checks"]["export-4bit"])
    assert export["16-bit base from the -bnb-4bit name"]["ok"] and export["parity f16"]["ok"]
    assert any(name.startswith("4-bit run trained on") and i["ok"] for name, i in export.items()), export
    # core on a GPU: the 7B shape at the recipe's defaults, 10 steps, the three runs on the same examples
    core = [c for c in calls if "--dump-train" in c][0]
    assert core[core.index("--grad-accum") + 1] == "4" and core[core.index("--max-steps") + 1] == "10"
    assert "--load-in-4bit" in core and "--eval-prompts" in core
    for kind in ("unsloth", "hf"):
        bench = [c for c in calls if "--examples" in c and c[c.index("--runs") + 1] == kind][0]
        assert bench[bench.index("--examples") + 1] == core[core.index("--dump-train") + 1]
        assert bench[bench.index("--arch") + 1] == "deepseek-llm-7b" and "--load-in-4bit" in bench
        assert bench[bench.index("--warmup") + 1] == "3" and bench[bench.index("--grad-accum") + 1] == "4"
    # tokens/s over the 7 steps after 3 of warm-up: 5,600 tokens a step, a second each (the fake's timing)
    assert results["checks"]["core-recipe"]["metrics"]["tokens_per_s"] == pytest.approx(8 * 700)
    report = report_markdown(results)
    assert "| recipes/deepseek_multiturn.py (4-bit) | 5,600 |" in report, report[report.index("## 0."):][:1500]
    assert "### t4-llama:" in report and "PASS README claim" in report and "PASS recipe within 3% of raw" in report

    # an OOM in T4 mode that the planner said would fit is the planner's failure, and the claim's
    failed = {"ok": False, "peak_reserved_gib": 14.2,
              "error": {"type": "OutOfMemoryError", "out_of_memory": True, "message": "CUDA out of memory"}}
    rows = t4_items(plan.BY_ID["t4-llama"], failed, False, failed["error"],
                    plan_for("llama-3.1-8b", 2048, 2, 16, True, "t4", 0), 14.2)
    found = {i["name"]: i for i in rows}
    assert found["planner predicted the outcome"]["ok"] is False and "ran out of memory" in found[
        "planner predicted the outcome"]["detail"]
    assert found["README claim"]["ok"] is False

"""Every recipe refuses every invalid choice and incompatible combination with exit code 2 before a model loads.

One process per recipe runs it once per bad command line (runpy), with the model loaders replaced by a function
that fails the test: a case that reaches a model load is a check made too late. The exit code path itself (the
excepthook turning a UserError into one line and exit code 2) is run for real at the end.
"""
import json
import os
from pathlib import Path

import pytest

from conftest import run

COMMON = [  # (flags, words the one-line error must contain)
    (["--label-layout", "bogus"], "invalid choice 'bogus' for argument '--label-layout'"),
    (["--bias", "sometimes"], "invalid choice 'sometimes' for argument '--bias'"),
    (["--optim", "adamw_9bit"], "invalid choice 'adamw_9bit' for argument '--optim'"),
    (["--lr-scheduler", "wavy"], "invalid choice 'wavy' for argument '--lr-scheduler'"),
    (["--export", "onnx"], "invalid choice 'onnx' for argument '--export'"),
    (["--r", "0"], "--r 0: the LoRA rank must be a positive integer"),
    (["--lora-alpha", "-1"], "--lora-alpha -1: must be positive"),
    (["--lora-dropout", "1.5"], "--lora-dropout 1.5: must be in [0, 1)"),
    (["--learning-rate", "nan"], "--learning-rate nan: must be a positive number"),
    (["--learning-rate", "-1e-4"], "--learning-rate -0.0001: must be a positive number"),
    (["--warmup-steps", "-3"], "--warmup-steps -3: must be 0 or more"),
    (["--grad-accum", "0"], "--grad-accum 0: must be a positive integer"),
    (["--batch-size", "0"], "--batch-size 0: must be a positive integer"),
    (["--max-steps", "0"], "--max-steps 0: give a positive number"),
    (["--num-train-epochs", "0"], "--num-train-epochs 0.0: must be positive"),
    (["--max-seq-length", "0"], "--max-seq-length 0: must be a positive integer"),
    (["--max-new-tokens", "0"], "--max-new-tokens 0: must be a positive integer"),
    (["--eval-prompts", "-1"], "--eval-prompts -1: must be 0 or more"),
    (["--save-steps", "0"], "--save-steps 0: must be a positive integer"),
    (["--max-grad-norm", "0"], "--max-grad-norm 0.0: must be positive"),
    (["--overwrite", "--resume"], "--overwrite and --resume: choose one"),
    (["--max-seq-lenght", "512"], "Unrecognized options: --max-seq-lenght"),
    (["--load-in-4bit", "maybe"], "--load-in-4bit: expected nothing, true, false or auto, not 'maybe'"),
]
TEXT = [
    (["--init", "svd"], "invalid choice 'svd' for argument '--init'"),
    (["--export-quants", "q3_k_s"], "invalid choice 'q3_k_s' for argument '--export-quants'"),
    (["--adalora", "--use-dora"], "--adalora with --use-dora: PEFT's AdaLoRA has no DoRA"),
    (["--adalora", "--use-rslora"], "--adalora with --use-rslora"),
    (["--adalora", "--init", "pissa"], "--adalora with --init pissa"),
    (["--adalora", "--init-r", "4", "--target-r", "8"], "need 0 < --target-r (8) <= --init-r (4)"),
    (["--adalora", "--deltaT", "0"], "--deltaT 0: must be a positive number"),
    (["--adalora", "--tinit", "30", "--tfinal", "30", "--max-steps", "40"], "--tinit 30 + --tfinal 30 must be below"),
    (["--init", "pissa", "--load-in-4bit"], "--init pissa with --load-in-4bit: PiSSA stays 16-bit by design"),
    (["--targets", "q_proj,qkv_proj"], "this model has no layer named qkv_proj"),
    (["--train-file", "no/such.jsonl"], "no/such.jsonl: not found"),
]
VISION = [
    (["--export", "gguf"], "invalid choice 'gguf' for argument '--export'"),
    (["--no-finetune-vision-layers", "--no-finetune-language-layers"], "nothing to train"),
    (["--no-finetune-attention-modules", "--no-finetune-mlp-modules"], "nothing to train"),
    (["--train-file", "no/such.jsonl"], "no/such.jsonl: not found"),
]
CASES = {"recipes/deepseek_multiturn.py": COMMON + TEXT, "recipes/llama_text.py": COMMON + TEXT,
         "recipes/llama_vision.py": COMMON + VISION}

DRIVER = """
import contextlib, io, json, runpy, sys
import unsloth, transformers
from common.errors import UserError
def loaded(*args, **kwargs):
    raise AssertionError("a model was loaded")
unsloth.FastLanguageModel.from_pretrained = unsloth.FastVisionModel.from_pretrained = loaded
transformers.AutoModelForImageTextToText.from_pretrained = loaded
recipe, cases, output_dir = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
results = []
for flags in cases:
    sys.argv = [recipe, "--model", "tiny", "--output-dir", output_dir, *flags]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(recipe, run_name="__main__")
        results.append(["ran", ""])
    except UserError as err:
        results.append(["user error", "error: " + str(err)])
    except SystemExit as stop:
        results.append([f"exit {stop.code}", stderr.getvalue()])
    except AssertionError as err:
        results.append(["loaded", str(err)])
print("RESULTS " + json.dumps(results))
"""


@pytest.mark.parametrize("recipe", sorted(CASES))
def test_bad_settings_stop_before_the_model_loads(recipe, tmp_path):
    cases = CASES[recipe]
    out = tmp_path / "never"
    result = run(["-c", DRIVER, recipe, json.dumps([flags for flags, _ in cases]), out], timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads(result.stdout.split("RESULTS ", 1)[1])
    for (flags, words), (outcome, message) in zip(cases, results):
        assert outcome in ("user error", "exit 2"), (flags, outcome, message)
        lines = [line for line in message.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and words in lines[0], (flags, message)
    assert not out.exists()  # nothing was written


def test_a_model_that_is_not_there_or_cut_off_is_one_line(tmp_path):
    cut = tmp_path / "cut-model"
    cut.mkdir()
    (cut / "config.json").write_text('{"model_type": "llama", "hidden_si')  # a copy that stopped halfway
    for model, words in ((tmp_path / "no-such-model", "not found (no such directory)"),
                         (cut, "config.json: cannot be read as a model config")):
        result = run(["recipes/deepseek_multiturn.py", "--model", model, "--output-dir", tmp_path / "r"])
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert words in result.stderr and not (tmp_path / "r").exists()


@pytest.mark.parametrize("flags, words", [(["--label-layout", "bogus"], "invalid choice"),
                                          (["--r", "0"], "--r 0: the LoRA rank")])
def test_the_exit_code_is_2_and_the_error_one_line(tmp_path, flags, words):
    result = run(["recipes/deepseek_multiturn.py", "--model", "tiny", "--output-dir", tmp_path / "r", *flags])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and words in errors[0], result.stderr


def test_a_hub_model_that_cannot_be_downloaded_is_one_line(tmp_path):
    # The default model's shape is bundled, so the memory plan passes offline; the load is what would fail. The
    # tests run with HF_HUB_OFFLINE=1 and an empty hub cache (conftest.OFFLINE).
    assert os.environ["HF_HUB_OFFLINE"] == "1" and not any(Path(os.environ["HF_HUB_CACHE"]).iterdir())
    result = run(["recipes/deepseek_multiturn.py", "--output-dir", tmp_path / "r"], timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--model deepseek-ai/deepseek-llm-7b-chat" in errors[0], result.stderr
    assert "not in the local cache" in errors[0] and "hf download deepseek-ai/deepseek-llm-7b-chat --local-dir DIR" \
        in errors[0]
    assert not (tmp_path / "r").exists()  # nothing was written
    shown = run(["scripts/show_labels.py", "datasets/chat_multiturn/train.jsonl", "--model",
                 "deepseek-ai/deepseek-llm-7b-chat"], timeout=300)
    assert shown.returncode == 2 and "not in the local cache" in shown.stderr and "Traceback" not in shown.stderr


def test_a_hub_that_cannot_be_reached_names_the_mirror(tmp_path, monkeypatch):
    """A closed port, as behind a firewall: the hub client retries (its backoff sleeps, 23 s in all, are skipped
    here), then the one line names the mirror. The same check the recipes and show_labels make before loading."""
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    from common.errors import UserError
    from common.hub import check_model_available

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    waits = []
    monkeypatch.setattr(_http.time, "sleep", waits.append)
    with pytest.raises(UserError) as refused:
        check_model_available("deepseek-ai/deepseek-llm-7b-chat")
    message = str(refused.value)
    assert message.startswith("--model deepseek-ai/deepseek-llm-7b-chat: cannot download it from http://127.0.0.1:9 (")
    assert "export HF_ENDPOINT=https://hf-mirror.com" in message and "\n" not in message
    assert "hf download deepseek-ai/deepseek-llm-7b-chat --local-dir DIR" in message
    assert len(waits) >= 1  # it really went to the network and was refused

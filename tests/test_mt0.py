"""recipes/mt0_seq2seq.py --model tiny (a random-weight mT5), end to end, the way a user runs it."""
import json
import math
import re

import pytest
import torch

from conftest import ROOT, run

RECIPE = "recipes/mt0_seq2seq.py"
RUN_AND_PROBE = """
import peft, runpy, sys, torch
sys.argv = ["recipes/mt0_seq2seq.py", *sys.argv[1:]]
g = runpy.run_path("recipes/mt0_seq2seq.py", run_name="__main__")
model, tokenizer = g["model"], g["tokenizer"]
batch = tokenizer(["考试前睡不着怎么办？"], text_target=["先深呼吸，再慢慢数到十。"], return_tensors="pt")
model.eval()
with torch.no_grad():
    logits = model(**batch).logits
layers = {name.rsplit(".", 1)[-1]: type(module.base_layer).__name__ for name, module in model.named_modules()
          if isinstance(module, peft.tuners.lora.LoraLayer)}  # the class of the base layer under each LoRA
torch.save({"batch": dict(batch), "logits": logits, "layers": layers}, g["run_dir"] / "probe.pt")
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mt0"
    result = run(["-c", RUN_AND_PROBE, "--model", "tiny", "--max-steps", "24", "--eval-prompts", "2",
                  "--max-new-tokens", "12", "--output-dir", out, "--export", "adapter"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result.stdout


def test_tiny_run_trains_with_falling_loss(tiny_run):
    out, stdout = tiny_run
    losses = [e["loss"] for e in json.loads((out / "log_history.json").read_text()) if "loss" in e]
    assert len(losses) == 24
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1, losses
    assert "tiny model: learning_rate 2e-3" in stdout and "transformers + PEFT" in stdout
    assert "(first) ->" in stdout and "input tokens/s" in stdout
    evaluation = json.loads((out / "eval.json").read_text())
    assert evaluation["eval_loss"] < evaluation["base_eval_loss"] - 0.1  # LoRA off: the base model's held-out loss
    assert len(evaluation["replies"]) == 2 and all({"base", "tuned", "prompt"} <= set(r) for r in evaluation["replies"])
    assert evaluation["train"]["examples"] == 200 and evaluation["train"]["mean_target_tokens"] > 10
    # the article's wi on a gated mT5 is wi_0 and wi_1: every linear layer gets LoRA
    assert evaluation["training"]["lora_modules"] == ["q", "k", "v", "o", "wi_0", "wi_1", "wo"]
    assert "wi is wi_0 and wi_1 here" in stdout
    padding = re.search(r"padding: (\d+)% .* padded to 256 as the article does, (\d+)% with per-batch", stdout)
    assert padding and int(padding.group(1)) > 70 and int(padding.group(2)) < int(padding.group(1))
    assert (out / "export" / "adapter" / "adapter_model.safetensors").exists()
    assert json.loads((out / "run_config.json").read_text())["learning_rate"] == 2e-3


def test_preflight_checks_shapes_masked_padding_and_loss(tiny_run):
    _, stdout = tiny_run
    preflight = stdout[stdout.index("preflight:"):]
    for key in ("input_ids", "attention_mask", "labels", "decoder_input_ids"):
        assert re.search(rf"  {key} +shape \(5, \d+\)  dtype torch.int64", preflight), key
    masked = re.search(r"labels: -100 on all (\d+) padded label positions and nowhere else; (\d+) target tokens",
                       preflight)
    assert masked and int(masked.group(1)) > 0 and int(masked.group(2)) > 0
    loss = re.search(r"one forward pass: loss (\d+\.\d+)", preflight)
    assert loss and 0 < float(loss.group(1)) < 20
    assert "example 0: encoder input 'What should I do if I panic during an exam?</s>'" in preflight


def test_adapter_reloads_with_identical_logits(tiny_run):
    from peft import PeftModel
    from transformers import AutoModelForSeq2SeqLM

    out, _ = tiny_run
    adapter = out / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_2_SEQ_LM"
    base = AutoModelForSeq2SeqLM.from_pretrained(config["base_model_name_or_path"], dtype=torch.float32).eval()
    probe = torch.load(out / "probe.pt")
    with torch.no_grad():
        base_logits = base(**probe["batch"]).logits
        logits = PeftModel.from_pretrained(base, adapter).eval()(**probe["batch"]).logits
    assert torch.allclose(logits, probe["logits"], atol=1e-4), (logits - probe["logits"]).abs().max()
    assert not torch.allclose(logits, base_logits, atol=1e-3)  # the adapter really changed the model


def test_seq2seq_preflight_refuses_padding_that_is_trained(tiny_run):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from common.errors import UserError
    from common.preflight import seq2seq_preflight

    out, _ = tiny_run
    base = json.loads((out / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    model, tokenizer = AutoModelForSeq2SeqLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)
    examples = [{"input_ids": [5, 6, 1], "attention_mask": [1, 1, 1], "labels": [7, 1]},
                {"input_ids": [5, 1], "attention_mask": [1, 1], "labels": [7, 8, 9, 1]}]

    def pad_labels_with_pad_id(features):  # the mistake the article guards against: pad ids left in the labels
        width = max(len(f["labels"]) for f in features)
        batch = tokenizer.pad([{k: f[k] for k in ("input_ids", "attention_mask")} for f in features],
                              return_tensors="pt")
        batch["labels"] = torch.tensor([f["labels"] + [tokenizer.pad_token_id] * (width - len(f["labels"]))
                                        for f in features])
        return batch

    with pytest.raises(UserError, match="padded label position is not -100"):
        seq2seq_preflight(model, tokenizer, pad_labels_with_pad_id, examples, 2)


def test_merged16_export_of_a_seq2seq_run(tiny_run):
    from transformers import AutoModelForSeq2SeqLM

    from common.export import export_run

    out, _ = tiny_run
    exported = export_run(out, "merged16", (), overwrite=True)
    merged = AutoModelForSeq2SeqLM.from_pretrained(exported["merged16"], dtype=torch.float32).eval()
    probe = torch.load(out / "probe.pt")
    with torch.no_grad():
        logits = merged(**probe["batch"]).logits
    assert torch.allclose(logits, probe["logits"], atol=2e-2)  # 16-bit weights: close, not identical


RELOAD_ON_4BIT = RUN_AND_PROBE + """
from peft import PeftModel
from transformers import AutoModelForSeq2SeqLM, BitsAndBytesConfig
nf4 = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                         bnb_4bit_compute_dtype=torch.float32)
base = AutoModelForSeq2SeqLM.from_pretrained(g["model_name"], dtype=torch.float32, quantization_config=nf4)
from common.four_bit import unpacked_cpu_4bit
unpacked_cpu_4bit(base)  # the recipe's kernel, not the packed AVX512-BF16 one (about 0.05 apart here)
tuned = PeftModel.from_pretrained(base, g["run_dir"] / "adapter").eval()
with torch.no_grad():
    logits = tuned(**batch).logits
torch.save({"q": type(base.encoder.block[0].layer[0].SelfAttention.q).__name__, "logits": logits},
           g["run_dir"] / "reloaded.pt")
"""


def test_load_in_4bit_trains_qlora_and_its_adapter_reloads_on_a_4bit_base(tmp_path):
    """One process (imports once): train 2 steps in 4-bit, then load the saved adapter onto a fresh 4-bit base."""
    from safetensors.torch import load_file

    out, held_out = tmp_path / "q4", tmp_path / "held_out.jsonl"
    held_out.write_text("".join((ROOT / "datasets/instructions/test.jsonl").read_text().splitlines(True)[:2]))
    result = run(["-c", RELOAD_ON_4BIT, "--model", "tiny", "--load-in-4bit", "--max-steps", "2", "--eval-prompts", "1",
                  "--max-new-tokens", "2", "--eval-file", held_out, "--output-dir", out])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "path: 4-bit QLoRA, bitsandbytes Linear4bit" in result.stdout
    assert json.loads((out / "run_config.json").read_text())["load_in_4bit"] is True
    probe, reloaded = torch.load(out / "probe.pt"), torch.load(out / "reloaded.pt")
    # transformers keeps T5's wo in float32 (_keep_in_fp32_modules: its output overflows in 16-bit), so not 4-bit
    assert probe["layers"] == {"q": "Linear4bit", "k": "Linear4bit", "v": "Linear4bit", "o": "Linear4bit",
                               "wi_0": "Linear4bit", "wi_1": "Linear4bit", "wo": "Linear"}
    training = json.loads((out / "eval.json").read_text())["training"]
    assert training["steps"] == 2 and all(map(math.isfinite, (training["first_loss"], training["last_loss"])))
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    # LoRA B starts at zero: nonzero in the first encoder layer means gradients got back through every 4-bit layer
    assert adapter["base_model.model.encoder.block.0.layer.0.SelfAttention.q.lora_B.weight"].abs().max() > 0
    assert reloaded["q"] == "Linear4bit"
    assert torch.allclose(reloaded["logits"], probe["logits"], atol=1e-4), (reloaded["logits"] - probe["logits"])


def test_compare_prints_the_articles_table(tmp_path):
    out = tmp_path / "cmp"
    result = run([RECIPE, "--model", "tiny", "--compare", "--max-steps", "4", "--eval-prompts", "2",
                  "--max-new-tokens", "4", "--output-dir", out])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = (out / "compare.md").read_text(encoding="utf-8")
    assert table in result.stdout
    lines = table.strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["", "experiment 1: few targets (q, v)", "experiment 2: all targets, lr 9.65e-6",
                      "experiment 3: all targets, lr 9.65e-7"]
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}
    assert rows["target modules"] == ["q, v"] + ["q, k, v, o, wi_0, wi_1, wo"] * 2
    assert rows["learning rate"] == ["9.65e-06", "9.65e-06", "9.65e-07"]  # the article's rates, even on tiny
    params = [int(p.replace(",", "")) for p in rows["trainable params"]]
    assert params[0] < params[1] == params[2]
    assert rows["steps"] == ["4", "4", "4"]
    held_out = [re.fullmatch(r"(\d+\.\d{4}) -> (\d+\.\d{4})", v) for v in rows["held-out loss (base -> LoRA)"]]
    assert all(held_out) and len({m.group(1) for m in held_out}) == 1  # one base model for all three
    prompts = [label for label in rows if label.startswith("prompt ")]
    assert len(prompts) == 2 and list(rows).count("original model") == 1  # dict keeps the last of repeated labels
    assert sum(line.startswith("| original model |") for line in lines) == 2
    assert sum(line.startswith("| LoRA model |") for line in lines) == 2
    results = json.loads((out / "compare.json").read_text())
    assert [r["learning_rate"] for r in results] == [9.65e-6, 9.65e-6, 9.65e-7]
    for number in (1, 2, 3):
        assert (out / f"exp{number}" / "adapter" / "adapter_model.safetensors").exists()


BAD_INPUT = """
import contextlib, io, json, runpy, sys
import transformers
from common.errors import UserError

def must_not_load(*args, **kwargs):
    raise AssertionError("the model was loaded before the bad input was refused")

transformers.AutoModelForSeq2SeqLM.from_pretrained = must_not_load
results = []
for args in json.loads(sys.argv[1]):
    sys.argv = ["recipes/mt0_seq2seq.py", "--model", "tiny", "--output-dir", sys.argv[2], *args]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            runpy.run_path("recipes/mt0_seq2seq.py", run_name="__main__")
        results.append({"args": args, "code": 0})
    except UserError as err:  # the recipe's excepthook turns this into `error: ...` and exit code 2
        results.append({"args": args, "code": 2, "error": f"error: {err}"})
    except SystemExit as stop:  # a bad flag or choice, refused by the parser
        results.append({"args": args, "code": stop.code, "error": stderr.getvalue().strip()})
print("RESULTS " + json.dumps(results))
"""
BAD_CASES = [
    (["--bias", "some"], "error: invalid choice 'some' for argument '--bias'"),
    (["--lr-scheduler", "cosine_warm"], "error: invalid choice 'cosine_warm' for argument '--lr-scheduler'"),
    (["--optim", "sgd"], "error: invalid choice 'sgd' for argument '--optim'"),
    (["--resume", "false"], "error: --resume false: --resume takes no value; write --resume to set it or --no-resume"),
    (["--export", "gguf"], "error: --export gguf: "),
    (["--r", "0"], "error: --r 0: the LoRA rank must be a positive integer"),
    (["--learning-rate", "0"], "error: --learning-rate 0.0: must be a positive number"),
    (["--targets", "q,wi,q_proj"], "error: --targets: this model has no layer named q_proj"),
    (["--compare", "--resume"], "error: --compare trains three new runs; it cannot --resume one"),
]


def test_bad_input_is_refused_before_the_model_loads(tmp_path):
    """Each case in one process (the imports once), with from_pretrained made to fail if anything reaches it."""
    from common.tiny.llama import tiny_model_path

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "hi", "response": "hello"}\n{"instruction": "hi", "response": ""}\n')
    cases = BAD_CASES + [
        (["--model", str(tiny_model_path("llama3"))], " is a 'llama' model; this recipe trains T5-family"),
        (["--train-file", str(bad)], f"error: {bad}:2: response: content is empty"),
        (["--compare", "--eval-file", str(bad)], f"error: {bad}:2: response: content is empty"),
    ]
    result = run(["-c", BAD_INPUT, json.dumps([args for args, _ in cases]), tmp_path / "r"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads(result.stdout.split("RESULTS ", 1)[1])
    assert len(results) == len(cases)
    for (args, message), got in zip(cases, results):
        assert got["code"] == 2 and message in got["error"], (args, got)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, message", [BAD_CASES[0], BAD_CASES[5]])
def test_bad_input_exits_2_with_one_line(tmp_path, args, message):
    result = run([RECIPE, "--model", "tiny", "--output-dir", tmp_path / "r", *args])
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith(message) and "Traceback" not in result.stderr
    assert "loading tiny" not in result.stdout and not (tmp_path / "r").exists()


def test_notebook_is_generated_from_the_recipe():
    import runpy

    import nbformat

    notebooks = runpy.run_path(str(ROOT / "scripts" / "make_notebooks.py"))
    path = ROOT / "notebooks" / "mt0_seq2seq.ipynb"
    assert path.read_text(encoding="utf-8") == notebooks["render"](notebooks["notebook_for"](ROOT / RECIPE))
    notebook = nbformat.read(path, as_version=4)
    headings = [c.source for c in notebook.cells if c.cell_type == "markdown"][1:]
    assert headings == [f"## {t}" for t in ("config", "load", "LoRA", "data and labels", "preflight", "train",
                                              "evaluate", "save", "export")]

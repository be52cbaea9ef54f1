"""scripts/list_modules.py and scripts/compare_lora.py, run as a user runs them; common/config.py's one-line flag
errors."""
import dataclasses
import json

import pytest

from conftest import run


def test_list_modules_groups_layers_and_names_presets():
    result = run(["scripts/list_modules.py", "tiny"])
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[2:]
             if line.strip() and not line.startswith("example")}
    assert set(lines) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "embed_tokens",
                          "lm_head"}
    assert "attention, all-linear, q_proj" in lines["q_proj"] and " 2 " in lines["q_proj"]
    assert "mlp, all-linear, down_proj" in lines["down_proj"] and "256 -> 128" in lines["down_proj"]
    assert "modules_to_save" in lines["lm_head"]


def test_list_modules_bad_model_is_a_clear_error(tmp_path):
    result = run(["scripts/list_modules.py", tmp_path / "nothing-here"])
    assert result.returncode == 2 and "not found" in result.stderr and "Traceback" not in result.stderr
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    result = run(["scripts/list_modules.py", empty])
    assert result.returncode == 2 and "a directory without config.json" in result.stderr, result.stderr
    (empty / "config.json").write_text('{"model_type": "llama", "hidden_si')  # cut off
    result = run(["scripts/list_modules.py", empty])
    assert result.returncode == 2 and "cannot be read as a model config" in result.stderr, result.stderr


def test_compare_lora_refuses_an_unknown_variant_before_training(tmp_path):
    result = run(["scripts/compare_lora.py", "--model", "tiny", "--variants", "LoRA,bogus", "--out", tmp_path / "c"])
    assert result.returncode == 2 and "--variants bogus: choose from LoRA, rsLoRA" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "c").exists()


def test_compare_lora_bad_model_is_exit_2_before_training(tmp_path):
    result = run(["scripts/compare_lora.py", "--model", tmp_path / "no-model", "--out", tmp_path / "c"])
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"--model {tmp_path / 'no-model'}: not found (no such directory)" in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1 and not (tmp_path / "c").exists()  # no variant started


def test_compare_lora_passes_on_a_recipe_refusing_its_input_as_exit_2(tmp_path):
    # a stand-in recipe (no training, no torch) that refuses a flag as the recipes do: one line, exit 2
    recipe = tmp_path / "refusing_recipe.py"
    recipe.write_text("import sys\nprint('error: --resume maybe: --resume takes no value', file=sys.stderr)\n"
                      "sys.exit(2)\n")
    result = run(["scripts/compare_lora.py", "--recipe", recipe, "--variants", "LoRA", "--out", tmp_path / "c",
                  "--resume", "maybe"])
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == f"error: {recipe}: --resume maybe: --resume takes no value"
    result = run(["scripts/compare_lora.py", "--recipe", tmp_path / "nothing.py", "--out", tmp_path / "c"])
    assert result.returncode == 2 and "--recipe" in result.stderr and "no such file" in result.stderr, result.stderr


@dataclasses.dataclass
class SwitchConfig:
    resume: bool = False
    use_dora: bool = False
    max_steps: int = 3


@pytest.mark.parametrize("argv, words", [
    (["--resume", "maybe"], "--resume maybe: --resume takes no value; write --resume to set it or --no-resume to"),
    (["--max-steps", "4", "--use_dora", "yes"], "--use_dora yes: --use_dora takes no value; write --use-dora to set"),
    (["--no-resume=true"], "--no-resume=true: --no-resume takes no value; write --resume"),
    (["--max-steps", "4", "5"], "Unrecognized options: 5"),  # not after a switch: tyro's own words
])
def test_a_switch_given_a_value_is_named(capsys, argv, words):
    from common.config import parse_config
    with pytest.raises(SystemExit) as stop:
        parse_config(SwitchConfig, argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert words in err, err


def test_compare_lora_table_and_plot(tmp_path):
    out = tmp_path / "compare"
    result = run(["scripts/compare_lora.py", "--model", "tiny", "--max-steps", "6", "--r", "8", "--out", out],
                 timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads((out / "results.json").read_text())
    assert [r["variant"] for r in rows] == ["LoRA", "rsLoRA", "DoRA", "gaussian init", "PiSSA", "LoftQ", "AdaLoRA"]
    for r in rows:
        assert (len(r["losses"]) == 6 and r["trainable_params"] > 0 and r["step_seconds"] > 0
                and r["peak_memory_gib"] > 0)
    # DoRA adds a magnitude vector per layer; AdaLoRA starts at init_r = 1.5 r, plus its singular values
    by_name = {r["variant"]: r for r in rows}
    assert by_name["DoRA"]["trainable_params"] > by_name["LoRA"]["trainable_params"]
    assert by_name["AdaLoRA"]["trainable_params"] > by_name["LoRA"]["trainable_params"]
    table = (out / "table.md").read_text()
    assert table.count("\n") == 2 + len(rows) and "| PiSSA | `--init pissa` |" in table
    assert (out / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_help_texts_read_as_written():
    """--help prints each recipe's and script's docstring (and dev/'s: a harness run as a directory, dev/gpu_check,
    prints its __main__.py's): an escape in it ("\\n" written for the two characters) prints as a line break in the
    middle of a sentence. Each docstring breaks lines only where its source does."""
    import ast
    import io
    import tokenize
    from pathlib import Path

    from conftest import ROOT

    for path in sorted([*Path(ROOT, "recipes").glob("*.py"), *Path(ROOT, "scripts").glob("*.py"),
                        *Path(ROOT, "dev").glob("*.py"), *Path(ROOT, "dev").glob("*/__main__.py")]):
        source = path.read_text(encoding="utf-8")
        docstring = ast.get_docstring(ast.parse(source), clean=False)
        if not docstring:
            continue
        written = next(t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.STRING)
        assert docstring.count("\n") == written.string.count("\n"), f"{path.relative_to(ROOT)}: an escape breaks a line"

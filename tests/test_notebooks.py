"""notebooks/*.ipynb stay in sync with their recipes, and the DeepSeek notebook runs on the tiny model."""
import json
import re

import nbformat
from nbclient import NotebookClient

from conftest import ROOT, run


def test_notebooks_are_in_sync_with_recipes():
    result = run(["scripts/make_notebooks.py", "--check"])
    assert result.returncode == 0, result.stdout + result.stderr
    recipes = sorted(p.stem for p in (ROOT / "recipes").glob("*.py"))
    assert sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")) == recipes


def test_a_stale_notebook_is_detected(tmp_path):
    import shutil
    for folder in ("recipes", "notebooks", "scripts"):  # a copy of the project: the tracked notebooks stay untouched
        shutil.copytree(ROOT / folder, tmp_path / folder)
    path = tmp_path / "notebooks" / "deepseek_multiturn.ipynb"
    path.write_text(path.read_text(encoding="utf-8").replace("learning_rate: float = 2e-4",
                                                             "learning_rate: float = 3e-4"),
                    encoding="utf-8")
    result = run([tmp_path / "scripts" / "make_notebooks.py", "--check"])
    assert result.returncode == 1 and "deepseek_multiturn.ipynb" in result.stdout


def test_readme_has_a_colab_badge_per_notebook():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    repo = re.search(r'GITHUB_REPO = "([^"]+)"', (ROOT / "scripts" / "make_notebooks.py").read_text()).group(1)
    for notebook in (ROOT / "notebooks").glob("*.ipynb"):
        assert f"https://colab.research.google.com/github/{repo}/blob/main/notebooks/{notebook.name}" in readme


def test_deepseek_notebook_runs_on_the_tiny_model(tmp_path):
    notebook = nbformat.read(ROOT / "notebooks" / "deepseek_multiturn.ipynb", as_version=4)
    config = next(c for c in notebook.cells if c.cell_type == "code" and "class Config" in c.source)
    # edited in the config cell, as a notebook user does; the kernel's own argv (-f ...) must be ignored
    config.source = (config.source
                     .replace('model: str = "deepseek-ai/deepseek-llm-7b-chat"', 'model: str = "tiny"')
                     .replace('output_dir: str = "runs/deepseek_multiturn"', f'output_dir: str = "{tmp_path / "nb"}"')
                     .replace("max_steps: int = -1", "max_steps: int = 8"))
    assert 'model: str = "tiny"' in config.source and "max_steps: int = 8" in config.source
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}})
    client.execute()
    output = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "trained 8 steps" in output and "(first) ->" in output
    assert (tmp_path / "nb" / "adapter" / "adapter_model.safetensors").exists()
    assert json.loads((tmp_path / "nb" / "run_config.json").read_text())["model"] == "tiny"

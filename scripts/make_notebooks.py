"""Generate notebooks/*.ipynb from the recipes' `# %%` cells (jupytext), for Colab and Jupyter.

    python scripts/make_notebooks.py            # write notebooks/ from recipes/
    python scripts/make_notebooks.py --check    # exit 1 if a notebook is out of date (the tests run this)

Each notebook is its recipe, cell for cell: the docstring becomes the first (markdown) cell, then a Colab cell
that clones this repository and runs scripts/setup.sh --system (it does nothing outside Colab), then the
recipe's cells. In a notebook the command line is not read: edit the config cell instead.
"""
import argparse
import sys
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
GITHUB_REPO = "one-gpu-recipes/one-gpu-recipes"  # where this project is published; change it in a fork
COLAB_SETUP = f'''\
# Colab: fetch the recipes and install everything (about 10 minutes on a T4 runtime). Does nothing elsewhere.
# Runtime > Change runtime type > T4 GPU first. To keep runs across disconnects, save them to Google Drive:
#   from google.colab import drive; drive.mount("/content/drive")
# then in the config cell set output_dir = "/content/drive/MyDrive/runs/..." and, after a disconnect, resume = True.
import os, subprocess, sys
if "google.colab" in sys.modules:
    if not os.path.exists("/content/one-gpu-recipes"):
        subprocess.run(["git", "clone", "--depth", "1", "https://github.com/{GITHUB_REPO}", \
"/content/one-gpu-recipes"], check=True)
        subprocess.run(["bash", "/content/one-gpu-recipes/scripts/setup.sh", "--system"], check=True)
    os.chdir("/content/one-gpu-recipes")
    sys.path.insert(0, "/content/one-gpu-recipes")'''


def notebook_for(recipe: Path) -> nbformat.NotebookNode:
    notebook = jupytext.read(recipe, fmt="py:percent")
    first = notebook.cells[0]
    docstring = first.source.strip().strip('"').strip()
    cells = [nbformat.v4.new_markdown_cell(f"# `{recipe.name}`\n\n" + _markdown(docstring)),
             nbformat.v4.new_code_cell(COLAB_SETUP)]
    for cell in notebook.cells[1:]:  # each "# %% title" cell gets a heading, as the sections of a notebook
        title = cell.metadata.get("title")
        if title:
            cells.append(nbformat.v4.new_markdown_cell(f"## {title}"))
        cells.append(nbformat.v4.new_code_cell(cell.source))
    for number, cell in enumerate(cells):  # stable ids, so the same recipe always gives the same file
        cell.id = f"cell-{number}"
    notebook.cells = cells
    notebook.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                         "language_info": {"name": "python"}, "accelerator": "GPU",
                         "colab": {"provenance": [], "gpuType": "T4"}}
    notebook.nbformat, notebook.nbformat_minor = 4, 5
    return notebook


def _markdown(docstring: str) -> str:
    """Indented command lines in the docstring become a code block."""
    lines, out, in_code = docstring.splitlines(), [], False
    for line in lines:
        is_code = line.startswith("    ")
        if is_code != in_code:
            out.append("```bash" if is_code else "```")
            in_code = is_code
        out.append(line[4:] if is_code else line)
    if in_code:
        out.append("```")
    return "\n".join(out)


def render(notebook) -> str:
    return nbformat.writes(notebook, version=4) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report notebooks that differ from their recipe")
    args = parser.parse_args(argv)
    stale = []
    for recipe in sorted((ROOT / "recipes").glob("*.py")):
        target = ROOT / "notebooks" / f"{recipe.stem}.ipynb"
        text = render(notebook_for(recipe))
        if args.check:
            if not target.exists() or target.read_text(encoding="utf-8") != text:
                stale.append(target)
        else:
            target.parent.mkdir(exist_ok=True)
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target.relative_to(ROOT)}")
    if stale:
        print("out of date (run python scripts/make_notebooks.py): "
              + ", ".join(str(p.relative_to(ROOT)) for p in stale))
        sys.exit(1)


if __name__ == "__main__":
    main()

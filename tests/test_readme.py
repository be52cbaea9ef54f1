"""The README's "Fork a recipe" section stays true to the code: the common/ modules a text recipe needs (its
imports, followed through common/) are the ones it lists, with their sizes in lines, in both languages."""
import ast
import re

import pytest

from conftest import ROOT

TEXT_RECIPES = ["recipes/deepseek_multiturn.py", "recipes/llama_text.py"]


def common_imports(path) -> set[str]:
    """The common/ modules `path` imports, at any depth of the file (recipes import some inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
            [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        found |= {name.split(".")[1] for name in names if name.startswith("common.") and name.count(".") == 1}
    return found


def needed_by(recipe: str) -> set[str]:
    needed, todo = set(), common_imports(ROOT / recipe)
    while todo:
        module = todo.pop()
        needed.add(module)
        todo |= common_imports(ROOT / "common" / f"{module}.py") - needed
    return needed


@pytest.mark.parametrize("readme", ["README.md", "README.zh-CN.md"])
def test_fork_section_lists_the_modules_a_text_recipe_needs_with_their_sizes(readme):
    text = (ROOT / readme).read_text(encoding="utf-8")
    section = text[text.index("\n## Fork a recipe" if readme == "README.md" else "\n## 派生"):]
    section = section[:section.index("\n## ", 1)]
    sizes = {}
    for row in re.findall(r"^\| (`common/.*?) \| ([\d +]+) \|", section, re.M):  # table rows, "a + b" for two
        for name, lines in zip(re.findall(r"`common/(\w+)\.py`", row[0]), row[1].split("+")):
            sizes[name] = int(lines)
    sizes.update({name: int(lines) for name, lines in re.findall(r"`(?:common/)?(\w+)\.py`\s*[（(](\d+)", section)})
    for name, lines in sizes.items():
        actual = len((ROOT / "common" / f"{name}.py").read_text(encoding="utf-8").splitlines())
        assert lines == actual, f"{readme}: common/{name}.py is listed with {lines} lines, it has {actual}"
    needed = set().union(*(needed_by(recipe) for recipe in TEXT_RECIPES)) - {"__init__"}
    assert needed <= set(sizes), f"{readme}: a text recipe needs {sorted(needed - set(sizes))}, not listed"

"""The READMEs and docs/ stay true to the code and to each other.

docs/forking.md's "Fork a recipe" section lists the common/ modules a text recipe needs (its imports, followed
through common/), with their sizes in lines, in both languages. Every relative link in README.md, README.zh-CN.md
and docs/ leads to a file that exists (and a link to a heading, to a heading that exists); every docs/ topic has its
Chinese twin in docs/zh-CN/, and each README links every docs file of its language."""
import ast
import re
from pathlib import Path

import pytest

from conftest import ROOT

TEXT_RECIPES = ["recipes/deepseek_multiturn.py", "recipes/llama_text.py"]


def module_file(name: str) -> Path:
    """common.export.run -> common/export/run.py; a package -> its __init__.py."""
    path = ROOT / name.replace(".", "/")
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"


def common_imports(path) -> set[str]:
    """The files of the common/ modules `path` imports, at any depth of the file (recipes import some inside
    functions), relative to the repository: `from common.export import merge` is common/export/__init__.py and
    common/export/merge.py."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("common."):
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.startswith("common.")]
        else:
            continue
        for name in names:  # a package's __init__.py runs too
            parts = name.split(".")
            found |= {file for file in (module_file(".".join(parts[:i])) for i in range(2, len(parts) + 1))
                      if file.is_file()}
    return {file.relative_to(ROOT).as_posix() for file in found}


def needed_by(recipe: str) -> set[str]:
    needed, todo = set(), common_imports(ROOT / recipe)
    while todo:
        module = todo.pop()
        needed.add(module)
        todo |= common_imports(ROOT / module) - needed
    return needed


@pytest.mark.parametrize("readme", ["docs/forking.md", "docs/zh-CN/forking.md"])
def test_fork_section_lists_the_modules_a_text_recipe_needs_with_their_sizes(readme):
    text = (ROOT / readme).read_text(encoding="utf-8")
    section = text[text.index("\n## Fork a recipe" if readme == "docs/forking.md" else "\n## 派生"):]
    section = section[:section.index("\n## ", 1)]
    sizes = {}
    for row in re.findall(r"^\| (`common/.*?) \| ([\d +]+) \|", section, re.M):  # table rows, "a + b" for two
        for name, lines in zip(re.findall(r"`(common/[\w/]+\.py)`", row[0]), row[1].split("+")):
            sizes[name] = int(lines)
    for name, lines in sizes.items():
        actual = len((ROOT / name).read_text(encoding="utf-8").splitlines())
        assert lines == actual, f"{readme}: {name} is listed with {lines} lines, it has {actual}"
    needed = set().union(*(needed_by(recipe) for recipe in TEXT_RECIPES))
    needed = {name for name in needed if (ROOT / name).read_text(encoding="utf-8").strip()}  # empty __init__.py
    assert needed <= set(sizes), f"{readme}: a text recipe needs {sorted(needed - set(sizes))}, not listed"


def test_a_text_recipe_reaches_no_vision_code_and_only_the_tiny_model_it_uses():
    for recipe in TEXT_RECIPES:
        needed = needed_by(recipe)
        assert not {"common/vision.py", "common/vision_backend.py", "common/seq2seq.py"} & needed, recipe
        assert {n for n in needed if n.startswith("common/tiny/")} <= {
            "common/tiny/__init__.py", "common/tiny/llama.py", "common/tiny/cache.py", "common/tiny/chat_templates.py"}


# ------------------------------------------------------------------ links between the READMEs and docs/

READMES = ["README.md", "README.zh-CN.md"]
DOCS = sorted(path.relative_to(ROOT).as_posix() for path in (ROOT / "docs").rglob("*.md"))


def links(path) -> list[str]:
    """The targets of the Markdown links in `path`, outside code blocks and code spans (a badge's outer link too)."""
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def anchors(path) -> set[str]:
    """The anchors GitHub gives the headings of `path`: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6} (.+?)\s*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return found


@pytest.mark.parametrize("page", READMES + DOCS)
def test_every_relative_link_resolves(page):
    source = ROOT / page
    for target in links(source):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not a file of this repository
            continue
        file, _, anchor = target.partition("#")
        path = (source.parent / file).resolve() if file else source
        assert path.is_file() and path.is_relative_to(ROOT), f"{page}: link to {target}: no such file in the repository"
        if anchor:
            assert anchor in anchors(path), f"{page}: link to {target}: no such heading in {file or page}"


def test_docs_has_a_chinese_twin_for_every_topic():
    english = {Path(name).name for name in DOCS if not name.startswith("docs/zh-CN/")}
    chinese = {Path(name).name for name in DOCS if name.startswith("docs/zh-CN/")}
    assert english, "docs/ holds no topic"
    assert english == chinese, \
        f"only in English: {sorted(english - chinese)}; only in Chinese: {sorted(chinese - english)}"
    for name in DOCS:
        first = (ROOT / name).read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# "), f"{name} does not start with a title"


@pytest.mark.parametrize("readme, folder", [("README.md", "docs"), ("README.zh-CN.md", "docs/zh-CN")])
def test_each_readme_links_every_docs_file_of_its_language(readme, folder):
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(ROOT / readme)}
    for path in sorted((ROOT / folder).glob("*.md")):
        assert path.resolve() in linked, f"{readme} does not link {path.relative_to(ROOT)}"
    for name in DOCS:  # and each docs file links back to its README
        if name.startswith("docs/zh-CN/") == (folder == "docs/zh-CN"):
            assert (ROOT / readme).resolve() in {(ROOT / name).parent.joinpath(t.partition("#")[0]).resolve()
                                                 for t in links(ROOT / name)}, f"{name} does not link {readme}"

"""common/startup.py: what every recipe and script sets before torch loads, and a --help that prints only the usage.

The commands here run in a fresh interpreter, not through conftest.run's stand-in: its server imported the libraries
before the command started, so neither what a library reads as it loads nor what it prints then would show.
"""
import ast
import re
import subprocess
import sys

import pytest

from common.startup import unsloth_banner_hidden
from conftest import ENVIRONMENT, ROOT

ENTRY_POINTS = [*(f"recipes/{p.name}" for p in sorted((ROOT / "recipes").glob("*.py"))),
                *(f"scripts/{p.name}" for p in sorted((ROOT / "scripts").glob("*.py"))), "dev/gpu_check"]
# It loads no library that reads these settings (jupytext, nbformat); the notebooks it writes start with the recipe's
# own first cell, and so with its import of common.startup.
NO_LIBRARY_LOADED = {"scripts/make_notebooks.py"}
# The environment of a user who set none of them.
UNSET = {k: v for k, v in ENVIRONMENT.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
SPIN = "2500"  # common/startup.py's GOMP_SPINCOUNT


def fresh(args, env=None, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env or UNSET, capture_output=True, text=True,
                          timeout=timeout)


OPENMP_DISPLAY = re.compile(r"\n?OPENMP DISPLAY ENVIRONMENT BEGIN\n.*?\nOPENMP DISPLAY ENVIRONMENT END\n", re.S)


def spin_counts(stderr: str) -> list[str]:
    """What each OpenMP runtime (libgomp) of the process read as it loaded, as OMP_DISPLAY_ENV=VERBOSE prints it:
    GOMP_SPINCOUNT, how many turns an idle thread spins before it sleeps (300,000 unless set; its OMP_WAIT_POLICY
    line says PASSIVE for that default too)."""
    return re.findall(r"GOMP_SPINCOUNT = '(\d+)'", stderr)


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_help_prints_the_usage_only_and_idle_threads_spin_briefly(entry_point):
    """One fresh process shows both: `--help` prints its usage and nothing else (no library's notice or banner as
    it loads), and every OpenMP runtime it loads (torch's, sentencepiece's own) read common/startup.py's spin count,
    which the user did not set. OMP_DISPLAY_ENV makes each print what it read, the one thing allowed on stderr."""
    result = fresh([entry_point, "--help"], env={**UNSET, "OMP_DISPLAY_ENV": "VERBOSE"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage:"), result.stdout[:1000]
    assert OPENMP_DISPLAY.sub("", result.stderr) == ""
    assert set(spin_counts(result.stderr)) <= {SPIN}, result.stderr[-3000:]
    if entry_point.startswith("recipes/"):  # every recipe loads torch before it parses its flags
        assert spin_counts(result.stderr), result.stderr[-3000:]


def test_what_the_user_set_is_kept_and_children_inherit_it():
    """A child started by a process that imported common.startup (the GGUF converter, llama.cpp's load check) spins
    as briefly; a wait policy or spin count the user set stands."""
    child = "import subprocess, sys; import common.startup; subprocess.run([sys.executable, '-c', 'import torch'])"
    display = {**UNSET, "OMP_DISPLAY_ENV": "VERBOSE"}
    assert spin_counts(fresh(["-c", child], env=display).stderr) == [SPIN]
    assert spin_counts(fresh(["-c", child], env={**display, "OMP_WAIT_POLICY": "PASSIVE"}).stderr) == ["0"]
    assert spin_counts(fresh(["-c", child], env={**display, "GOMP_SPINCOUNT": "500"}).stderr) == ["500"]


def imported_modules(path) -> list[str]:
    """The modules a file imports at its top level (inside `with` blocks too), in order."""
    names = []
    for statement in ast.parse(path.read_text(encoding="utf-8")).body:
        for node in [statement, *(statement.body if isinstance(statement, ast.With) else [])]:
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.append(node.module)
    return names


@pytest.mark.parametrize("entry_point", sorted(set(ENTRY_POINTS) - NO_LIBRARY_LOADED))
def test_common_startup_comes_before_any_library(entry_point):
    """Before torch, Unsloth, transformers or anything that imports them: what they read as they load is set by then."""
    path = ROOT / entry_point / "__main__.py" if (ROOT / entry_point).is_dir() else ROOT / entry_point
    libraries = [name for name in imported_modules(path) if name.split(".")[0] not in sys.stdlib_module_names]
    assert libraries and libraries[0] == "common.startup", libraries[:3]


def test_only_unsloths_banner_is_hidden(capsys):
    with unsloth_banner_hidden():
        print("Unsloth 2026.10.9: no GPU found, training on CPU (x86_64, 2 threads, bfloat16 = True). CPU training "
              "is much slower than GPU training; supported: text LoRA / full finetuning with SFTTrainer.")
        print("🦥 Unsloth: Will patch your computer to enable 2x faster free finetuning.")
        print("Unsloth: `bitsandbytes` is not installed - 4bit QLoRA unallowed, but 16bit and full finetuning works!")
    assert capsys.readouterr().out == ("Unsloth: `bitsandbytes` is not installed - 4bit QLoRA unallowed, but 16bit "
                                       "and full finetuning works!\n")

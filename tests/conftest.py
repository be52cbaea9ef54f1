import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Idle OpenMP threads sleep instead of spinning. A process here holds two OpenMP runtimes (torch's own libgomp and
# the system one bitsandbytes' CPU backend links), each with a thread per core; spinning, they and a second process
# (the test and its recipe subprocess, torchrun's two ranks) starve each other: measured on 2 cores, a 4-bit tiny run
# took 174 s instead of 4.7 s while another process was busy. Set before torch is imported, so every process has it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from transformers import AutoTokenizer

    from common.tiny_model import tiny_model_path
    return AutoTokenizer.from_pretrained(tiny_model_path("deepseek"))


@pytest.fixture(scope="session")
def tiny_llama3_tokenizer():
    from transformers import AutoTokenizer

    from common.tiny_model import tiny_model_path
    return AutoTokenizer.from_pretrained(tiny_model_path("llama3"))


def run(args, timeout=600, **kwargs):
    """Run a command from the project root, the way a user would; returns the CompletedProcess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **kwargs.pop("env", {})}
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)

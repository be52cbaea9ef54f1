"""Ollama TEMPLATEs rendered by Go's own text/template (tests/ollama_render/main.go, set up as Ollama sets it up),
when a Go toolchain is installed (`apt-get install golang-go`); the tests pass without it, on
common.export.go_template."""
import json
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "ollama_render"


@lru_cache(maxsize=1)
def go_binary() -> Path | None:
    if not shutil.which("go"):
        return None
    out = Path(tempfile.mkdtemp(prefix="ollama-render-")) / "ollama_render"
    env_cache = Path(tempfile.gettempdir()) / "ollama-render-gocache"
    result = subprocess.run(["go", "build", "-o", str(out), "."], cwd=SOURCE, capture_output=True, text=True,
                            timeout=300, env={"GOCACHE": str(env_cache), "GOFLAGS": "-mod=mod",
                                              "HOME": tempfile.gettempdir(), "PATH": "/usr/bin:/bin:/usr/local/go/bin"})
    assert result.returncode == 0, result.stderr
    return out


def render_with_go(jobs: list[tuple[str, list[dict]]]) -> list:
    """One Go process for all (template, messages) jobs: each rendered text, or {"error": ...}."""
    binary = go_binary()
    payload = json.dumps([{"template": t, "messages": m} for t, m in jobs])
    result = subprocess.run([str(binary)], input=payload, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)

"""The run's context: the options, the work directories, the environment of the subprocesses, and the models built
once and deleted after use (Context); and the small helpers every check's row is made of (item, status_of)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from common.errors import UserError
from common.export.destination import dir_size
from dev.gpu_check.plan import MODELS

ROOT = Path(__file__).resolve().parents[2]  # the repository: the subprocesses run from here
PACKAGE_DIR = Path(__file__).resolve().parent  # `python PACKAGE_DIR --build ...`: this package's own workers


class Context:
    def __init__(self, args):
        self.device, self.cpu = args.device, args.device == "cpu"
        self.out = Path(args.out)
        self.work = Path(args.work) if args.work else self.out / "work"
        self.cache = Path(args.cache) if args.cache else None
        self.keep_models = args.keep_models
        self.steps = args.max_steps or (3 if self.cpu else 20)
        self.t4_steps = args.t4_steps
        self.deadline = time.time() + args.time_limit if args.time_limit else None
        self.python = sys.executable
        path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        self.env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        if self.cache:
            self.env["TINY_MODEL_CACHE"] = str(self.cache)
        if self.cpu and "OMP_NUM_THREADS" not in os.environ:
            # The tiny models' operations are too small to share between threads, and on a busy machine torch's
            # threads waiting on each other made a training step 20x slower (1.2 s against 25 s for 3 steps).
            self.env["OMP_NUM_THREADS"] = "1"
        for sub in ("logs", "probes", "runs", "data", "bench", "export"):
            (self.work / sub).mkdir(parents=True, exist_ok=True)
        self.models, self.builds, self.passed = {}, {}, {}
        self.rows = {}  # results.json's rows: this run's and those of earlier runs into the same OUT
        self.gpu = None

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.time()

    def timeout(self, default: float) -> float:
        left = self.remaining()
        return default if left is None else max(30.0, min(default, left - 20))

    def run(self, name: str, command: list, timeout: float = 1500) -> dict:
        """A subprocess from the project root, its output in WORK/logs/NAME.log; never raises for its failure."""
        log = self.work / "logs" / f"{name}.log"
        start = time.time()
        with open(log, "w", encoding="utf-8") as f:
            f.write("$ " + " ".join(map(str, command)) + "\n")
            f.flush()
            # Its own process group, so that a timeout also ends what it started (benchmark.py's runs, a converter).
            proc = subprocess.Popen([str(c) for c in command], cwd=ROOT, env=self.env, stdout=f,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = proc.wait(timeout=self.timeout(timeout))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rc = "timeout"
        text = log.read_text(encoding="utf-8", errors="replace")
        return {"rc": rc, "seconds": round(time.time() - start, 1), "log": str(log), "text": text,
                "tail": tail(text)}

    # ---- the models, each built once, on disk only while a selected check needs it

    def model(self, group: str) -> str:
        """What a recipe's --model gets for `group`: "tiny" or a tiny family model on a CPU, a random-weight model of
        the real shape on a GPU (built in a subprocess: this process never holds GPU memory)."""
        if group in self.models:
            return self.models[group]
        if self.cpu:
            if group == "r1-qwen":
                from dev.real_tokenizers import build_tiny_family_model
                self.models[group] = str(build_tiny_family_model(MODELS[group][1], self.cache))
            else:
                self.models[group] = "tiny"
            return self.models[group]
        kind = "vision" if group == "vision" else "text"
        arch = MODELS[group][0]
        from common.memory_plan import model_shape_of
        need = model_shape_of(arch).params * 2 * 1.02 / 2**30
        from common.tiny.cache import cache_root
        root = cache_root(self.cache)
        root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(root).free / 2**30
        existing = root / (f"random-{arch}" if kind == "vision" else f"random-{arch}-{MODELS[group][1]}")
        if not (existing / "config.json").is_file() and free < need + 2:
            raise UserError(f"not enough disk for the random-weight {arch}: it needs {need:.1f} GiB, {free:.1f} GiB "
                            f"free in {root}")
        result = self.run(f"build-{group}", [self.python, PACKAGE_DIR, "--build", f"{kind}:{arch}",
                                             *(["--cache", self.cache] if self.cache else [])], timeout=1200)
        line = next((ln for ln in reversed(result["text"].splitlines()) if ln.startswith("built ")), None)
        if result["rc"] != 0 or line is None:
            raise RuntimeError(f"building the random-weight {arch} failed ({result['rc']}): {result['tail']}")
        path = line.split(" ", 1)[1]
        self.builds[group] = {"arch": arch, "path": path, "seconds": result["seconds"],
                              "gib_on_disk": round(dir_size(path) / 2**30, 2)}
        self.models[group] = path
        return path

    def release(self, group: str):
        """Delete a group's random-weight models from disk (a GPU machine's disk holds about one 11B model)."""
        if self.cpu or self.keep_models or group not in self.models:
            return
        from dev.random_models import remove
        path = Path(self.models.pop(group))
        remove(path)
        remove(path.parent / f"{path.name}-bnb-4bit")
        self.builds.get(group, {})["deleted_after_use"] = True


def tail(text: str, lines: int = 25) -> str:
    kept = [ln.rsplit("\r", 1)[-1] for ln in text.splitlines() if ln.strip()]
    return "\n".join(kept[-lines:])


def load_json(path, default=None):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def item(name: str, ok, detail: str) -> dict:
    """One line of a check: ok True (pass), False (fail) or None (not applicable / informational)."""
    return {"name": name, "ok": ok, "detail": detail}


def status_of(items: list[dict]) -> str:
    if any(i["ok"] is False for i in items):
        return "fail"
    return "pass" if any(i["ok"] is True for i in items) else "n/a"

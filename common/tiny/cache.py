"""The cache every tiny and random-weight model is built into: where it is, what names a build, and how a build
lands (once, whole, under its final name).

    directory = cache_root(cache_dir) / f"tiny-deepseek-{cache_key(BUILDER_VERSION, shape, files=[__file__])}"
    build_once(directory, build)   # build(staging) fills a staging folder; one rename publishes it
"""
import hashlib
import json
import os
import shutil
from pathlib import Path

BUILD_PACKAGES = ("torch", "transformers", "tokenizers", "sentencepiece")  # what writes the cached files


def cache_root(cache_dir=None) -> Path:
    """Where tiny models are cached: cache_dir, else $TINY_MODEL_CACHE, else ~/.cache/one-gpu-recipes."""
    return Path(cache_dir or os.environ.get("TINY_MODEL_CACHE")
                or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "one-gpu-recipes")


def build_once(directory: Path, build) -> Path:
    """`directory`, built first if it is not there: build(staging) fills a staging folder of this process beside it,
    which is then renamed to `directory` (one rename: a half-built folder is never found under the final name). Two
    processes building the same folder at once: the first rename wins and the other's staging is deleted (the builds
    are deterministic: the same files). Any other failure is raised and leaves no staging folder behind. Every cached
    build (common/tiny/, dev/, scripts/benchmark.py) is made this way."""
    if directory.exists():
        return directory
    staging = directory.parent / f".building-{directory.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        build(staging)
        try:
            staging.rename(directory)
        except OSError:
            if not directory.exists():  # not another process having finished the same build first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def cache_key(*values, files=()) -> str:
    """The 12 hex digits that name a cached build: a sha256 of everything that shapes it. `values` go in as JSON
    (BUILDER_VERSION, shapes, chat templates, texts); `files` are read whole (the builder modules' own source, the
    input files); the versions of BUILD_PACKAGES are added here. Every cache is keyed by this."""
    from importlib.metadata import version

    h = hashlib.sha256(json.dumps([{name: version(name) for name in BUILD_PACKAGES}, *values],
                                  ensure_ascii=False).encode())
    for path in map(Path, files):
        data = path.read_bytes()
        h.update(f"\0{path.name}\0{len(data)}\0".encode() + data)
    return h.hexdigest()[:12]

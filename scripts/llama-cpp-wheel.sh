#!/usr/bin/env bash
# Build llama-cpp-python once for this CPU and keep the wheel, so `make setup` compiles it only the first time.
#   scripts/llama-cpp-wheel.sh PIP WHEEL_DIR      (the Makefile calls it; prints the wheel's path)
# PyPI has only the source archive (76 MB) of llama-cpp-python; compiling it takes 3.5 min on 2 cores here.
# The wheel goes to WHEEL_DIR (default ~/.cache/medcite/wheels, outside the clone, so a fresh clone or
# `make clean` reuses it), keyed by the version and this CPU's instruction sets.
#
# Why not GGML_NATIVE: -march=native turns on llama.cpp's AMX int8 kernels where the CPU lists AMX, and they
# crash (SIGSEGV in ggml_backend_amx_mul_mat) on this machine's virtual CPU. The ISA flags below are read from
# /proc/cpuinfo instead, with AMX left off. LLAMA_CPU=x86-64-v3 builds a portable AVX2 wheel instead (the Docker
# image: it must run on other hosts than the one that built it).
set -euo pipefail
PIP=${1:?usage: llama-cpp-wheel.sh PIP [WHEEL_DIR]}
DIR=${2:-${MEDCITE_WHEELS:-$HOME/.cache/medcite/wheels}}
VERSION=0.3.36
# The source archive's sha256 (PyPI's), checked before it is built; `make lock` (scripts/lock.py) rewrites it.
LLAMA_SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
if [[ "${LLAMA_CPU:-native}" == "x86-64-v3" ]]; then
  flags="avx avx2 fma f16c bmi2"
else
  flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
fi
has() { [[ " $flags " == *" $1 "* ]] && echo ON || echo OFF; }
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=$(has avx) -DGGML_AVX2=$(has avx2) -DGGML_FMA=$(has fma) -DGGML_F16C=$(has f16c)"
CMAKE_ARGS+=" -DGGML_BMI2=$(has bmi2) -DGGML_AVX_VNNI=$(has avx_vnni) -DGGML_AVX512=$(has avx512f)"
CMAKE_ARGS+=" -DGGML_AVX512_VBMI=$(has avx512_vbmi) -DGGML_AVX512_VNNI=$(has avx512_vnni)"
CMAKE_ARGS+=" -DGGML_AVX512_BF16=$(has avx512_bf16) -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
CMAKE_ARGS+=" -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF"
CMAKE_ARGS+=" -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF"
key=$(echo "$CMAKE_ARGS" | sha256sum | cut -c1-12)
out="$DIR/llama-cpp-$VERSION-$key"
if ! ls "$out"/llama_cpp_python-$VERSION-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $VERSION for this CPU (once; about 4 min on 2 cores) into $out" >&2
  mkdir -p "$DIR"
  tmp=$(mktemp -d "$DIR/.build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "llama-cpp-python==$VERSION --hash=sha256:$LLAMA_SDIST_SHA256" > "$tmp/source.txt"
  CMAKE_ARGS="$CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    "$PIP" wheel -q --no-deps --no-binary llama-cpp-python --require-hashes -w "$tmp" -r "$tmp/source.txt" >&2
  rm -rf "$out" && mv "$tmp" "$out"   # complete or absent: a killed build leaves only .build.* behind
  trap - EXIT
fi
ls "$out"/llama_cpp_python-$VERSION-*.whl

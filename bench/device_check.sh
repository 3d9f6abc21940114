#!/usr/bin/env bash
# The accelerator check of bench/device_check.py, in one command for a lent GPU or TPU machine.
#
#   bash bench/device_check.sh --fetch   # here, with a package registry: wheels into .whl/
#   bash bench/device_check.sh [ARGS]    # there: installs what is missing, then runs the check
#
# A machine that already has a jax seeing its accelerator (the GPU image here does) keeps it;
# otherwise jax for CUDA 12 or TPU is installed from a registry. Pure-Python packages the image
# lacks (gguf, nltk, defusedxml) come from .whl/ when present. ARGS go to device_check.py
# (e.g. --json=$OUT/device_check.json). Budget: well under 10 minutes on an H100/H200.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=(gguf==0.19.0 nltk==3.10.4 defusedxml==0.7.1)

if [[ "${1:-}" == "--fetch" ]]; then
  mkdir -p .whl
  $PY -m pip download -q --no-deps --only-binary=:all: -d .whl "${WHEELS[@]}"
  ls .whl
  exit 0
fi

if ! $PY -c "import jax, sys; sys.exit(jax.default_backend() == 'cpu')" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null; then
    $PY -m pip install -q "jax[cuda12]"
  else
    $PY -m pip install -q "jax[tpu]"
  fi
fi
if ! $PY -c "import gguf, nltk" 2>/dev/null; then
  if [[ -d .whl ]]; then
    $PY -m pip install -q --no-index --no-deps --target /tmp/gtalign-site .whl/*.whl
  else
    $PY -m pip install -q --target /tmp/gtalign-site "${WHEELS[@]}"
  fi
  export PYTHONPATH=/tmp/gtalign-site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm \
  --format=csv,noheader || true
exec $PY bench/device_check.py "$@"

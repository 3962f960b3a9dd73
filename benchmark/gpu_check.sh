#!/usr/bin/env bash
# The one prepared GPU check: every method's supernet training images/s and peak memory (fp32 vs bf16) on
# ImageNet-shaped synthetic input, the data path's decode images/s on generated JPEGs, one retraining step.
# One JSON line per figure; within 5 minutes on one GPU. On CPU: benchmark/gpu_check.sh --device cpu --tiny.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
exec timeout "${GPU_CHECK_TIMEOUT:-300}" "$PY" -m benchmark.gpu_check "$@"

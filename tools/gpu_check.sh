#!/usr/bin/env bash
# GPU acceptance run: GPU tests, FAISS GPU shards (exact and IVF, fp16) at 1M and 10M x 512,
# embedding throughput per model in fp16, the service under load; results as JSON.
#
#   tools/gpu_check.sh [--out gpu_check.json]   # on a GPU machine, under 8 minutes
#   tools/gpu_check.sh --dry-run                 # on any CPU, tiny sizes, seconds (CI)
#
# Needs the project installed with GPU FAISS (pip install -e '.[gpu]' or faiss-gpu-cu12) and a
# CUDA build of torch. PYTHON overrides the interpreter (default: .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" -m tools.gpu_check "$@"

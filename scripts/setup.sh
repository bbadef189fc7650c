#!/usr/bin/env bash
# Create .venv (if missing) and install mmdet-deploy with the export, dev, faces, ray and openvino extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: a CPU wheel of 2.13.0 is available; anything unpinned pulls CUDA builds.
.venv/bin/python -m pip install -q -c scripts/constraints.txt "torch==2.13.0"
.venv/bin/python -m pip install -q -c scripts/constraints.txt -e ".[export,dev,faces,ray,openvino]"

#!/usr/bin/env bash
# Fetch (here, where PyPI is reachable) the wheels the GPU machine lacks, into .whl/ (in .gitignore): PyAV, so
# that the device check's media are H.264 and the runtime decodes with PyAV there as it does here.
# Then call the device tool with carry [".whl"] and the command `bash scripts/device_check.sh "$OUT"`:
# scripts/device_check.sh unpacks .whl/*.whl into its scratch folder, without the network. About 35 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
AV_VERSION=${AV_VERSION:-18.1.0}  # abi3 wheel for CPython >= 3.11: fits the GPU machine's Python 3.12
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "av==$AV_VERSION"
ls -la .whl

#!/usr/bin/env bash
# Set up .venv from nothing if needed, then run the whole test suite (lint included, see tests/test_lint.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"

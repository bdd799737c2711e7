#!/usr/bin/env bash
# Set-up command 2: install what the tests need, then lint, type-check and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --upgrade pip >/dev/null
python3 -m pip install -e ".[train,postgres,dev,bench]"
ruff check recsys service pipelines tests benchmarks scripts
mypy
python3 -m pytest -n 2 --timeout 600 "$@"

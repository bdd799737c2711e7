#!/usr/bin/env bash
# Set-up command 1: install recsys and run its main job on the embedded default (no server, no download).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --upgrade pip >/dev/null
python3 -m pip install -e ".[train,postgres]"
python3 -m recsys quickstart

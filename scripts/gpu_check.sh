#!/usr/bin/env bash
# The first GPU check (docs/gpu.md, "The first GPU check"): one command that gives specsweep's first numbers on an
# NVIDIA GPU, fetching nothing: an estimated 3 minutes on one H200, sized for at most 6.
#   bash scripts/gpu_check.sh --fetch-wheels     # here, with PyPI: the missing pure-Python packages into .gpu-wheels/
#   bash scripts/gpu_check.sh [--pack] OUT_DIR   # on the GPU machine: PyTorch on cuda, Zeus on NVML
#   bash scripts/gpu_check.sh --dry-run OUT_DIR  # on a CPU: the same path on a tiny model (tests/test_gpu_check.py)
# It builds a random model of Qwen2.5-0.5B's shape (fixed seed, bf16, an offline tokenizer: scripts/gpu_check.py),
# runs `python main.py -m` on it for speculation=draft_model (the model as its own draft) and ngram, each in float32
# and bfloat16, and writes OUT_DIR/summary.txt, OUT_DIR/result-<job>.json, OUT_DIR/environment.txt (nvidia-smi,
# package versions) and OUT_DIR/gpu_check.log; Hydra's run tree is OUT_DIR/runs/ (with --pack: OUT_DIR/runs.tar.gz,
# so OUT_DIR holds 8 files). Exit 0 only when every job is ok and the float32 self-draft acceptance check passes.
# Python: $PYTHON if set; else .venv/bin/python where it imports everything; else python3 with the wheels of
# .gpu-wheels/ installed into a temporary folder on PYTHONPATH (with the repo's src/), on top of the machine's own
# torch, transformers and nvidia-ml-py.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WHEELS=$REPO/.gpu-wheels
MAX_WHEELS_MIB=40
ANTLR=4.9.3 # omegaconf 2.3 and hydra-core 1.3 require antlr4-python3-runtime==4.9.*; 4.9.3 has no wheel on PyPI

mode=gpu
pack=0
out=""
for arg in "$@"; do
  case "$arg" in
    --fetch-wheels) mode=fetch ;;
    --dry-run) mode=dry ;;
    --pack) pack=1 ;;
    -*) echo "gpu_check.sh: unknown option $arg (expected --fetch-wheels, --dry-run or --pack)" >&2; exit 2 ;;
    *) out=$arg ;;
  esac
done

# The packages `python main.py backend=pytorch energy=zeus` imports that the GPU image lacks (the image has torch,
# transformers, tokenizers, safetensors, numpy, scipy, rich, psutil, httpx, pandas, nvidia-ml-py: device KINDS.md).
# Versions are the pins of requirements-common.txt.
pin() { grep -E "^$1==" "$REPO/requirements-common.txt" | head -1; }
if [ "$mode" = fetch ]; then
  pip=(python3 -m pip)
  [ -x .venv/bin/python ] && pip=(.venv/bin/python -m pip)
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  "${pip[@]}" download -q --only-binary=:all: --no-deps --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHEELS" "$(pin hydra-core)" "$(pin omegaconf)" "$(pin zeus)"
  # Only an sdist on PyPI: built here into a pure-Python wheel (py3-none-any), so nothing is built there.
  "${pip[@]}" wheel -q --no-deps --no-binary antlr4-python3-runtime -w "$WHEELS" "antlr4-python3-runtime==$ANTLR"
  ls -l "$WHEELS"
  kib=$(du -sk "$WHEELS" | cut -f1)
  echo "gpu_check.sh: $(ls "$WHEELS" | wc -l) wheels, $kib KiB in $WHEELS"
  if [ "$kib" -gt $((MAX_WHEELS_MIB * 1024)) ]; then
    echo "gpu_check.sh: $WHEELS is over $MAX_WHEELS_MIB MiB" >&2
    exit 1
  fi
  exit 0
fi
if [ -z "$out" ]; then
  echo "usage: bash scripts/gpu_check.sh [--dry-run] [--pack] OUT_DIR | --fetch-wheels" >&2
  exit 2
fi
mkdir -p "$out"
OUT=$(cd "$out" && pwd)
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
teepid=$!
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
# At exit (the exit code kept): the temporary model and wheels go, and the log is complete before OUT is read.
trap 'rm -rf "$WORK"; exec >&- 2>&-; wait "$teepid" 2>/dev/null || true' EXIT
started=$SECONDS
step() { echo "== [$((SECONDS - started)) s] $*"; }

# Sizes: the GPU run measures (4 prompts x 2 repetitions, 60 tokens); the CPU dry run only has to pass through.
# max_new_tokens is a multiple of k+1 = 6 (draft_model's k is 5), so a fully accepted generation is 10 whole steps.
if [ "$mode" = gpu ]; then
  device=cuda prompts=4 repetitions=2 tokens=60 limit_s=330 tiny=() model_name=random-qwen2.5-0.5b-shape
  energy=(energy=zeus energy.idle_seconds=5 energy.approx_instant_energy=false)
else
  device=cpu prompts=2 repetitions=1 tokens=24 limit_s=300 tiny=(--tiny) model_name=random-tiny-qwen2
  energy=(energy=none)
fi

imports="import hydra, omegaconf, antlr4, zeus.monitor, rich, psutil, numpy, scipy, torch, transformers, tokenizers"
imports+=", safetensors, specsweep"
step "python"
if [ -n "${PYTHON:-}" ]; then
  py=$PYTHON
elif [ -x .venv/bin/python ] && .venv/bin/python -c "$imports" 2>/dev/null; then
  py=.venv/bin/python
else
  py=python3
  if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    # --target, not a venv: the image's python3 is itself a venv, and a venv made from it would not see its torch.
    step "installing $(ls "$WHEELS" | wc -l) carried wheels into $WORK/site"
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$WHEELS"/*.whl
  fi
  export PYTHONPATH="$WORK/site:$REPO/src${PYTHONPATH:+:$PYTHONPATH}"
fi
case "$py" in */*) [[ "$py" = /* ]] || py=$REPO/$py ;; esac # absolute: main.py runs from OUT_DIR/runs
if ! "$py" -c "$imports"; then
  echo "gpu_check.sh: $py cannot import what main.py needs (above); bash scripts/gpu_check.sh --fetch-wheels first" >&2
  exit 1
fi
# Nothing is fetched: the model is built here and every hub lookup is refused.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HOME="$WORK/hf" WANDB_MODE=disabled PYTHONUNBUFFERED=1

{
  echo "# gpu_check.sh ${mode} run, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(uname -srm)"
  echo "# nvidia-smi -L"
  nvidia-smi -L 2>&1 || echo "(nvidia-smi unavailable)"
  echo "# nvidia-smi"
  nvidia-smi 2>&1 || echo "(nvidia-smi unavailable)"
  echo "# package versions"
  "$py" scripts/gpu_check.py versions
} >"$OUT/environment.txt"
cat "$OUT/environment.txt"

step "building the model (${tiny[*]:-Qwen2.5-0.5B shape}) in $WORK/model"
"$py" scripts/gpu_check.py build-model "$WORK/model" "${tiny[@]}" --seed 0 | tee -a "$OUT/environment.txt"

RUNS=$OUT/runs
mkdir -p "$RUNS"
args=(
  -m backend=pytorch "backend.device=$device" backend.dtype=float32,bfloat16 "${energy[@]}" logger=none
  speculation=draft_model,ngram "model.name=$model_name" "model.target=$WORK/model"
  "model.draft=$WORK/model" "dataset.num_prompts=$prompts" "generation.max_new_tokens=$tokens"
  measurement.warmup=1 "measurement.repetitions=$repetitions" "hydra.sweep.dir=$RUNS/sweep"
)
step "python main.py ${args[*]}"
# From inside OUT/runs, so the global results table (outputs/) lands there too; SIGINT at the limit, so the job in
# flight is recorded as interrupted and the summary still comes out.
set +e
(cd "$RUNS" && timeout -s INT -k 30 "$limit_s" "$py" "$REPO/main.py" "${args[@]}")
status=$?
set -e
step "main.py exited $status"
set +e
"$py" scripts/gpu_check.py summarize "$OUT" "$RUNS/sweep"
checks=$?
set -e
if [ "$pack" = 1 ]; then
  tar -czf "$OUT/runs.tar.gz" -C "$OUT" runs && rm -rf "$RUNS"
fi
step "done: main.py $status, checks $checks; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
[ "$status" = 0 ] && [ "$checks" = 0 ]

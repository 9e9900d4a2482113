#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite, slow integration tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
# SPECSWEEP_SKIP_SETUP=1: the caller has just run setup (.ci/run does, before linting).
[ "${SPECSWEEP_SKIP_SETUP:-0}" = 1 ] || bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"

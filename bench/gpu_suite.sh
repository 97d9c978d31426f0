#!/usr/bin/env bash
# The GPU device suite in one call; bench/gpu_suite.py says what it measures.
#   bench/gpu_suite.sh prepare          here, with network: fill bench/wheels/ for the GPU machine
#   bench/gpu_suite.sh OUT [ARGS]       on the GPU machine: install offline, measure, write OUT/gpu_suite.json
#   bench/gpu_suite.sh --dry-run OUT    on a CPU: tiny dimensions, in this checkout's .venv
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  prepare)
    shift
    exec .venv/bin/python bench/gpu_suite.py --prepare-wheels "$@"
    ;;
  --dry-run)
    exec .venv/bin/python bench/gpu_suite.py --dry-run --out "${2:-gpu-suite-out}" "${@:3}"
    ;;
  *)
    out=${1:-${OUT:-gpu-suite-out}}
    shift || true
    exec "${PYTHON:-python3}" bench/gpu_suite.py --out "$out" "$@"
    ;;
esac

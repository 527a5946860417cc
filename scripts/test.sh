#!/usr/bin/env bash
# The test command: set-up (idempotent), lint, type-check, then the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=${PYTHON:-python3}
export LLM_PIPELINE_REQUIRE_INSTRUMENTATION=${LLM_PIPELINE_REQUIRE_INSTRUMENTATION:-1}
$PY -m ruff check pipeline tests bench
$PY -m ruff format --check pipeline
$PY -m mypy
$PY -m pytest -q -p no:cacheprovider "$@"

#!/usr/bin/env bash
# The test command: set-up (idempotent: Go when needed, apt packages, the package with its
# [test,demo] extras, native helpers, the Collector), lint, type-check, then the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# A Go recent enough for the Collector build (fetched from the Go module proxy when the
# machine's is missing or too old; scripts/ensure-go.sh says which it uses).
if go_bin=$(bash scripts/ensure-go.sh); then
  export PATH="$go_bin:$PATH"
else
  echo "test: no Go toolchain for the Collector build; its tests will say so" >&2
fi
bash scripts/setup.sh
PY=${PYTHON:-python3}
export LLM_PIPELINE_REQUIRE_INSTRUMENTATION=${LLM_PIPELINE_REQUIRE_INSTRUMENTATION:-1}
$PY -m ruff check pipeline tests bench
$PY -m ruff format --check pipeline
$PY -m mypy
$PY -m pytest -q -p no:cacheprovider "$@"

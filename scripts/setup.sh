#!/usr/bin/env bash
# Installs what the sidecar and its tests need: Debian's prometheus (+ promtool) and
# prometheus-alertmanager (amtool), the Python package with its test extras and the
# instrumentation libraries, and the OCB-built Collector (cached). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v amtool >/dev/null || need_apt+=(prometheus-alertmanager)
if ((${#need_apt[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The Debian packages start their services; the tests start their own instances.
  $SUDO systemctl stop prometheus prometheus-alertmanager prometheus-node-exporter 2>/dev/null || true
fi

PY=${PYTHON:-python3}
$PY -m pip install -q --disable-pip-version-check -e ".[test]"
if [ -f tests/requirements-instrumentation.txt ]; then
  $PY -m pip install -q --disable-pip-version-check -r tests/requirements-instrumentation.txt
fi

if [ "${LLM_PIPELINE_SKIP_COLLECTOR:-0}" != "1" ] && [ -x scripts/build-collector.sh ]; then
  bash scripts/build-collector.sh
fi

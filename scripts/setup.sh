#!/usr/bin/env bash
# Installs what the sidecar and its tests need: Debian's prometheus (+ promtool) and
# prometheus-alertmanager (amtool), the Python package with its test extras and the
# instrumentation libraries, its native helpers (native/, when cargo is there), and the
# OCB-built Collector (cached). Idempotent.
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
$PY -m pip install -q --disable-pip-version-check -e ".[test,demo]"
if [ -f tests/requirements-instrumentation.txt ]; then
  $PY -m pip install -q --disable-pip-version-check -r tests/requirements-instrumentation.txt
fi
# Packages whose declared dependencies cannot be resolved with the rest (see the file).
if [ -f tests/requirements-instrumentation-nodeps.txt ]; then
  $PY -m pip install -q --disable-pip-version-check --no-deps \
    -r tests/requirements-instrumentation-nodeps.txt
fi

# The native helpers (native/: Rust, PyO3): optional for the sidecar, which has a Python path
# for each, but CI (CI=1) requires them. Rust comes from rustup (~/.cargo/bin).
export PATH="$PATH:$HOME/.cargo/bin"
if command -v cargo >/dev/null; then
  $PY -m pip install -q --disable-pip-version-check ./native
elif [ -n "${CI:-}" ]; then
  echo "setup: cargo not found; CI needs it to build native/ (install Rust with rustup)" >&2
  exit 1
else
  echo "setup: cargo not found; the sidecar runs without its native helpers (slower)" >&2
fi

# The OpenTelemetry SDKs tests/interop drives (Node.js, Go, Python), cached.
bash scripts/setup-interop.sh

if [ "${LLM_PIPELINE_SKIP_COLLECTOR:-0}" != "1" ] && [ -x scripts/build-collector.sh ]; then
  bash scripts/build-collector.sh
fi
# The trace and log backends of tests/backends/ (Jaeger, VictoriaLogs), cached; one at a time.
[ "${LLM_PIPELINE_SKIP_BACKENDS:-0}" = "1" ] || { bash scripts/build-jaeger.sh && bash scripts/build-victorialogs.sh; }

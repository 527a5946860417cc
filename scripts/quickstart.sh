#!/usr/bin/env bash
# The first run on a fresh machine, without root: a virtual environment in .venv with the
# sidecar and its demo extra, the native helpers when a recent enough cargo is there, the
# sidecar on its embedded defaults, demo LLM traffic through the real OpenTelemetry SDK, and
# where to look. One line per step; a failed step shows its output. Ctrl-C stops everything
# (the sidecar drains) and exits 0.
#
#   PYTHON=python3.12       the interpreter for the venv (default: python3, else python3.1x)
#   QUICKSTART_NATIVE=0     skip the native helpers even when cargo is there
#   DEMO_RATE=5 DEMO_DURATION=0   demo requests/s; seconds of traffic (0: until Ctrl-C)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
DATA=$ROOT/pipeline-data
NATIVE_MIN_CARGO=1.85   # the newest rust-version among native/Cargo.lock's crates
PORTS=("4317:OTLP/gRPC" "4318:OTLP/HTTP" "9464:metrics")
STEP_LOG=$(mktemp "${TMPDIR:-/tmp}/llm-pipeline-quickstart.XXXXXX")
T0=$(date +%s.%N)

say() { printf '==> [%3ss] %s\n' "$SECONDS" "$*"; }
fail() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }
# run DESCRIPTION CMD...: one line, the command's output kept in $STEP_LOG and shown on failure.
run() {
  local what=$1; shift
  say "$what"
  if ! "$@" >"$STEP_LOG" 2>&1; then
    printf '\n--- output of the failed step (%s) ---\n' "$what" >&2
    tail -n 60 "$STEP_LOG" >&2
    fail "$what: failed (full output above)"
  fi
}

# --- 1. a Python 3.11+ -------------------------------------------------------------------
pick_python() {
  local c
  for c in ${PYTHON:-} python3 python3.13 python3.12 python3.11; do
    if command -v "$c" >/dev/null 2>&1 &&
      "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  return 1
}
PY=$(pick_python) || fail "no Python 3.11+ found (python3 is $(python3 --version 2>&1 || echo missing)); set PYTHON=/path/to/python3.11+"

# --- 2. the virtual environment, and an installer for it -----------------------------------
# uv installs the ~40 wheels in parallel: ~20 s where pip takes ~100 s on a loaded 2-core VM.
# It comes from PATH, else from PyPI through the base Python's pip (the venv then needs no
# ensurepip), else through the venv's own pip; plain pip is the fallback when uv cannot be had.
base_pip_ok() {
  "$PY" -c 'import sys, pip; v = tuple(int(x) for x in pip.__version__.split(".")[:2]); sys.exit(v < (22, 3))' 2>/dev/null
}
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c '' 2>/dev/null; then
  say "using the environment in .venv ($("$VENV/bin/python" --version 2>&1))"
else
  rm -rf "$VENV"
  say "creating the environment in .venv ($("$PY" --version 2>&1), $PY)"
  if command -v uv >/dev/null 2>&1 || base_pip_ok; then
    venv_args=(--without-pip)   # no pip inside: uv (or the base pip) installs into it
  else
    venv_args=()
  fi
  if ! "$PY" -m venv "${venv_args[@]}" "$VENV" >"$STEP_LOG" 2>&1; then
    rm -rf "$VENV"
    if command -v virtualenv >/dev/null 2>&1; then
      run "python -m venv is unavailable; using virtualenv" virtualenv -p "$PY" "$VENV"
    else
      cat "$STEP_LOG" >&2
      fail "$PY cannot create a virtual environment with pip (its ensurepip module is missing).
  On Debian/Ubuntu install one of:  sudo apt-get install python3-venv   (or python3-pip)
  or point PYTHON at another Python 3.11+:  PYTHON=/path/to/python3.12 bash scripts/quickstart.sh"
    fi
  fi
fi
VPY=$VENV/bin/python
export UV_NATIVE_TLS=${UV_NATIVE_TLS:-1}   # the system's CA store, as pip uses
[ -n "${PIP_INDEX_URL:-}" ] && export UV_INDEX_URL=${UV_INDEX_URL:-$PIP_INDEX_URL}
[ -n "${PIP_EXTRA_INDEX_URL:-}" ] && export UV_EXTRA_INDEX_URL=${UV_EXTRA_INDEX_URL:-$PIP_EXTRA_INDEX_URL}
PIPFLAGS=(--disable-pip-version-check --no-input)
if "$VPY" -m pip --version >/dev/null 2>&1; then
  PIP=("$VPY" -m pip "${PIPFLAGS[@]}")
elif base_pip_ok; then
  PIP=("$PY" -m pip --python "$VPY" "${PIPFLAGS[@]}")
else
  PIP=()
fi
UV=$(command -v uv 2>/dev/null || true)
[ -z "$UV" ] && [ -x "$VENV/bin/uv" ] && UV=$VENV/bin/uv
if [ -z "$UV" ] && ((${#PIP[@]})); then
  say "installing uv (a fast installer) into .venv"
  if "${PIP[@]}" install --no-compile "uv>=0.5,<1" >"$STEP_LOG" 2>&1 && [ -x "$VENV/bin/uv" ]; then
    UV=$VENV/bin/uv
  else
    say "  uv is not available here; using pip (slower)"
  fi
fi
if [ -n "$UV" ]; then
  INSTALL=("$UV" pip install --python "$VPY") INSTALLER=uv
elif ((${#PIP[@]})); then
  INSTALL=("${PIP[@]}" install --no-compile) INSTALLER=pip
else
  fail "no installer for .venv: neither uv nor a pip (install python3-venv or python3-pip, or uv)"
fi

# --- 3. the sidecar and the demo's SDK (runtime dependencies only) ------------------------
stamp=$(sha256sum <pyproject.toml | cut -c1-16)
if [ "$(cat "$VENV/.quickstart-installed" 2>/dev/null)" = "$stamp" ] &&
  "$VPY" -c 'import pipeline.cli, opentelemetry.sdk, rich' 2>/dev/null; then
  say "dependencies already installed"
else
  run "installing llm-otel-pipeline with its demo extra into .venv ($INSTALLER)" \
    "${INSTALL[@]}" -e ".[demo]"
  echo "$stamp" >"$VENV/.quickstart-installed"
fi

# --- 4. the native helpers, when a recent enough cargo is there --------------------------
export PATH="$PATH:$HOME/.cargo/bin"
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
native_stamp=$(cat native/Cargo.toml native/Cargo.lock native/src/*.rs 2>/dev/null | sha256sum | cut -c1-16)
if [ "${QUICKSTART_NATIVE:-1}" = "0" ]; then
  say "native helpers: skipped (QUICKSTART_NATIVE=0); the sidecar uses its Python path"
elif ! command -v cargo >/dev/null 2>&1; then
  say "native helpers: no cargo found; the sidecar uses its Python path (same results, slower)."
  say "  to add them later: install Rust >= $NATIVE_MIN_CARGO (rustup.rs), then run this script again"
elif cargo_v=$(cargo --version 2>/dev/null | awk '{print $2}') && ! version_ge "$cargo_v" "$NATIVE_MIN_CARGO"; then
  say "native helpers: cargo $cargo_v is older than $NATIVE_MIN_CARGO; the sidecar uses its Python path (rustup update to build them)"
elif [ "$(cat "$VENV/.quickstart-native" 2>/dev/null)" = "$native_stamp" ] &&
  "$VPY" -c 'import llm_pipeline_native' 2>/dev/null; then
  say "native helpers: already built (cargo $cargo_v)"
else
  # The `quick` profile: release optimizations without LTO (a fraction of the build time;
  # the bench and the image use the LTO release build).
  run "building the native helpers (cargo $cargo_v, profile quick; a few minutes the first time)" \
    env CARGO_TARGET_DIR="$ROOT/native/target" MATURIN_PEP517_ARGS="--profile quick" \
    "${INSTALL[@]}" ./native
  echo "$native_stamp" >"$VENV/.quickstart-native"
fi

# --- 5. ports, then the sidecar -----------------------------------------------------------
busy=()
for p in "${PORTS[@]}"; do
  port=${p%%:*} name=${p#*:}
  if ! "$VPY" - "$port" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no conflict
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
  then busy+=("port $port ($name) is in use by another process"); fi
done
if ((${#busy[@]})); then
  printf 'quickstart: %s\n' "${busy[@]}" >&2
  fail "stop that process (e.g. an earlier quickstart: see 'ss -ltnp'), then run this again"
fi

mkdir -p "$DATA"
SIDECAR_LOG=$DATA/sidecar.log
say "starting the sidecar (log: pipeline-data/sidecar.log)"
# In its own session: Ctrl-C in the terminal reaches the demo and this script, which stops
# the demo first and then lets the sidecar drain what it got.
setsid "$VPY" -m pipeline.cli run >"$SIDECAR_LOG" 2>&1 </dev/null &
SIDECAR=$!
DEMO=""
stop() {
  trap - INT TERM
  if [ -n "$DEMO" ]; then  # the demo flushes what it made (or dies, if still starting)
    kill -TERM "$DEMO" 2>/dev/null || true
    wait "$DEMO" 2>/dev/null || true
  fi
  if kill -0 "$SIDECAR" 2>/dev/null; then
    say "stopping: the sidecar drains its queues"
    kill -TERM "$SIDECAR" 2>/dev/null
    wait "$SIDECAR" 2>/dev/null || true
  fi
  rm -f "$STEP_LOG"
  exit 0
}
trap stop INT TERM
trap 'rm -f "$STEP_LOG"; kill -TERM $SIDECAR 2>/dev/null || true' EXIT

# Ours when the process is alive and the socket listening on 9464 is one of its own fds (a
# /health answer alone could come from another sidecar on that port).
ours() {
  "$VPY" - "$SIDECAR" 9464 <<'PY'
import os, sys
pid, port = sys.argv[1], int(sys.argv[2])
inodes = set()
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        lines = open(table).read().splitlines()[1:]
    except OSError:
        continue
    for line in lines:
        f = line.split()
        if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
            inodes.add(f[9])
try:
    fds = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
except OSError:
    sys.exit(1)
sys.exit(0 if any(f"socket:[{i}]" in fds for i in inodes) else 1)
PY
}
up=""
for _ in $(seq 1 150); do
  kill -0 "$SIDECAR" 2>/dev/null || break
  if ours && "$VPY" -c 'import urllib.request as u; u.urlopen("http://127.0.0.1:9464/health", timeout=1)' 2>/dev/null; then
    up=1; break
  fi
  sleep 0.1
done
if [ -z "$up" ]; then
  tail -n 20 "$SIDECAR_LOG" >&2
  fail "the sidecar did not start (its log is above and in pipeline-data/sidecar.log)"
fi
elapsed=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')

cat <<MSG

  llm-pipeline is running (pid $SIDECAR) with demo traffic; ready in ${elapsed} s.
    live view:                    .venv/bin/llm-pipeline top      (in another terminal)
    metrics (Prometheus scrape):  http://127.0.0.1:9464/metrics
    enriched traces and logs:     ./pipeline-data/{traces,logs}.jsonl  (OTLP JSON lines)
    point your app here:          OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317
    try:  curl -s http://127.0.0.1:9464/metrics | grep gen_ai_client_tokens_total
  Ctrl-C stops the demo and the sidecar.

MSG
"$VPY" -m pipeline.cli demo --endpoint http://127.0.0.1:4317 \
  --rate "${DEMO_RATE:-5}" --duration "${DEMO_DURATION:-0}" &
DEMO=$!
wait "$DEMO" || true
DEMO=""
stop

#!/usr/bin/env bash
# The main job on a fresh machine: install, start the sidecar on its embedded defaults, send
# demo LLM traffic through the real OpenTelemetry SDK, and print where to look.
# Ctrl-C stops everything (the sidecar drains and exits 0).
set -euo pipefail
cd "$(dirname "$0")/.."
LLM_PIPELINE_SKIP_COLLECTOR=1 bash scripts/setup.sh >/dev/null
PY=${PYTHON:-python3}
DURATION=${DEMO_DURATION:-0}   # seconds of demo traffic; 0 = until Ctrl-C

$PY -m pipeline.cli run &
SIDECAR=$!
trap 'kill -TERM $SIDECAR 2>/dev/null; wait $SIDECAR 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 100); do
  curl -fsS http://127.0.0.1:9464/health >/dev/null 2>&1 && break
  sleep 0.1
done
if ! kill -0 "$SIDECAR" 2>/dev/null || ! curl -fsS http://127.0.0.1:9464/health >/dev/null 2>&1; then
  echo "llm-pipeline did not start (ports 4317/4318/9464 busy?)" >&2
  exit 1
fi
cat <<MSG

  llm-pipeline is running with demo traffic.
    metrics (Prometheus scrape):  http://127.0.0.1:9464/metrics
    enriched traces and logs:     $(pwd)/pipeline-data/{traces,logs}.jsonl  (OTLP JSON lines)
    point your app here:          OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317
    try:  curl -s http://127.0.0.1:9464/metrics | grep gen_ai_client_tokens_total

MSG
$PY -m pipeline.cli demo --endpoint http://127.0.0.1:4317 --rate "${DEMO_RATE:-5}" --duration "$DURATION"

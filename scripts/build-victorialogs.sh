#!/usr/bin/env bash
# Build VictoriaLogs (the log backend of the end-to-end tests), cached per version; prints the
# binary's path last. A cold build takes ~4 min on 2 cores.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/build-go-program.sh" \
  victoria-logs github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs "${VICTORIALOGS_VERSION:-v1.52.2}"

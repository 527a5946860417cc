#!/usr/bin/env bash
# Build Jaeger v2 (the trace backend of the end-to-end tests), cached per version; prints the
# binary's path last. A cold build takes ~10-15 min and ~2 GB of memory on 2 cores.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/build-go-program.sh" \
  jaeger github.com/jaegertracing/jaeger/cmd/jaeger "${JAEGER_VERSION:-v1.75.0}"

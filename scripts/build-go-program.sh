#!/usr/bin/env bash
# Build a Go program from the Go module proxy at a pinned version, cached per version:
#   build-go-program.sh <name> <package path> <version>
# e.g. build-go-program.sh jaeger github.com/jaegertracing/jaeger/cmd/jaeger v1.75.0
#
# The program is built in a scratch module (`go get -tool <pkg>@<version>` + `go build`), so its
# own go.mod/go.sum pin every dependency, and cached at
#   ${LLM_PIPELINE_CACHE:-$HOME/.cache/llm-otel-pipeline}/<name>/<version>/<name>
# The build is skipped when that binary exists; it is moved in only on success. The binary path
# is the last line of stdout; everything else goes to stderr.
#
# Env: LLM_PIPELINE_CACHE (cache root), FORCE=1 (rebuild even if cached).
set -euo pipefail

[[ $# -eq 3 ]] || { echo "usage: $0 <name> <package path> <version>" >&2; exit 2; }
name="$1" pkg="$2" version="$3"
cache_root="${LLM_PIPELINE_CACHE:-$HOME/.cache/llm-otel-pipeline}"
out_dir="$cache_root/$name/$version"
binary="$out_dir/$name"

log() { printf '[build-%s] %s\n' "$name" "$*" >&2; }

if [[ -x "$binary" && "${FORCE:-0}" != 1 ]]; then
  log "cached: $binary"
  echo "$binary"
  exit 0
fi
command -v go >/dev/null || { log "go not found on PATH"; exit 1; }

export GOTOOLCHAIN=local               # never try to download another Go toolchain
export GOFLAGS="${GOFLAGS:-} -p=2"     # the machines have 2 cores
export CGO_ENABLED=0
mkdir -p "$out_dir"
work="$(mktemp -d "$out_dir/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

start=$(date +%s)
log "building $pkg@$version; a cold build takes minutes on 2 cores"
(cd "$work" && go mod init "build.local/$name" && go get -tool "$pkg@$version") 2>&1 \
  | grep -v -e '^go: downloading' -e '^go: added' >&2 || true
[[ -f "$work/go.sum" ]] || { log "go get -tool $pkg@$version failed"; exit 1; }
(cd "$work" && go build -trimpath -ldflags="-s -w" -o "$work/$name" "$pkg") >&2
mv "$work/$name" "$binary.tmp"
mv "$binary.tmp" "$binary"
cp "$work/go.mod" "$work/go.sum" "$out_dir/"
log "built in $(( $(date +%s) - start ))s: $binary"
echo "$binary"

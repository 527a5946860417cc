#!/usr/bin/env bash
# Build the otelcol-llm Collector distribution from collector/builder-config.yaml with OCB.
#
# The binary is cached at
#   ${LLM_PIPELINE_CACHE:-$HOME/.cache/llm-otel-pipeline}/otelcol-llm/<sha256 of builder-config.yaml>/otelcol-llm
# and the build is skipped when it already exists. The binary path is printed as the last line
# of stdout; everything else goes to stderr.
#
# Env: LLM_PIPELINE_CACHE (cache root), COLLECTOR_BUILDER_CONFIG (manifest, default the repo's),
#      FORCE=1 (rebuild even if cached).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
manifest="${COLLECTOR_BUILDER_CONFIG:-$repo_root/collector/builder-config.yaml}"
cache_root="${LLM_PIPELINE_CACHE:-$HOME/.cache/llm-otel-pipeline}"

log() { printf '[build-collector] %s\n' "$*" >&2; }

command -v go >/dev/null || { log "go not found on PATH"; exit 1; }
[[ -f "$manifest" ]] || { log "manifest not found: $manifest"; exit 1; }

builder_version="$(sed -n 's/^# builder-version: *\(v[0-9][0-9.]*\) *$/\1/p' "$manifest" | head -n1)"
[[ -n "$builder_version" ]] || { log "no '# builder-version: vX.Y.Z' line in $manifest"; exit 1; }

hash="$(sha256sum "$manifest" | cut -c1-16)"
out_dir="$cache_root/otelcol-llm/$hash"
binary="$out_dir/otelcol-llm"

if [[ -x "$binary" && "${FORCE:-0}" != 1 ]]; then
  log "cached: $binary"
  echo "$binary"
  exit 0
fi

export GOTOOLCHAIN=local               # never try to download another Go toolchain
export GOFLAGS="${GOFLAGS:-} -p=2"     # the machines have 2 cores
export CGO_ENABLED=0
gobin="$cache_root/bin/builder-$builder_version"
mkdir -p "$gobin" "$out_dir"

start=$(date +%s)
if [[ ! -x "$gobin/builder" ]]; then
  log "installing go.opentelemetry.io/collector/cmd/builder@$builder_version"
  GOBIN="$gobin" go install "go.opentelemetry.io/collector/cmd/builder@$builder_version" >&2
fi

# Build in a scratch dir next to the final location; move the binary in only on success so a
# half-finished build never counts as cached.
work="$(mktemp -d "$out_dir/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
sed "s|^\(  output_path:\).*|\1 $work/src|" "$manifest" > "$work/builder-config.yaml"
grep -q "output_path: $work/src" "$work/builder-config.yaml" || { log "could not set dist.output_path"; exit 1; }

log "building otelcol-llm (manifest $manifest, hash $hash); this takes a few minutes on 2 cores"
src="$work/src"
# 1. OCB generates the sources and go.mod. Its module step (`go mod tidy`) also wants the test-only
#    dependencies of every component, and some of those are not on the module proxy this project
#    can reach (e.g. fileexporter's tests import otlpencodingextension). So a failure here is
#    tolerated as long as go.mod was written; a dependency the binary really needs makes step 3 fail.
#    Those expected failures (`go.mod ... 403`) go to modules.log, shown only if the build fails.
modlog="$work/modules.log"
fail() { log "$*"; grep -v '^go: downloading' "$modlog" | tail -n 30 >&2 || true; exit 1; }
if ! (cd "$work" && "$gobin/builder" --config "$work/builder-config.yaml" --skip-compilation) >"$work/builder.log" 2>&1; then
  [[ -f "$src/go.mod" ]] || { cat "$work/builder.log" >&2; log "builder failed before writing go.mod"; exit 1; }
  { echo "builder's module step failed (test-only deps missing); continuing with 'go mod tidy -e':"
    cat "$work/builder.log"; } >>"$modlog"
fi
# 2. Resolve the modules, tolerating packages that only tests of dependencies import.
(cd "$src" && go mod tidy -e) >>"$modlog" 2>&1 || true
# 3. Strict versioning: every component module must resolve to exactly the manifest's version.
while read -r mod ver; do
  got="$(cd "$src" && go list -m -f '{{.Version}}' "$mod")"
  [[ "$got" == "$ver" ]] || fail "version drift: $mod wanted $ver, resolved $got (module notes below)"
done < <(sed -n 's/^ *- gomod: *\([^ ]*\) \(v[^ ]*\) *$/\1 \2/p' "$manifest")
# 4. Compile (same flags OCB uses).
(cd "$src" && go build -trimpath -ldflags="-s -w" -o otelcol-llm .) >&2 ||
  fail "go build failed (module notes below)"
mv "$work/src/otelcol-llm" "$binary.tmp"
mv "$binary.tmp" "$binary"
cp "$manifest" "$out_dir/builder-config.yaml"
log "built in $(( $(date +%s) - start ))s: $binary"
echo "$binary"

#!/usr/bin/env bash
# Installs the OpenTelemetry SDKs that tests/interop drives against the sidecar, once, cached:
#   - Node.js: tests/interop/node/package-lock.json through `npm ci`, into
#     $CACHE/interop/node-<hash>/node_modules
#   - Go: tests/interop/go (its go.mod/go.sum) built into $CACHE/interop/go-<hash>/interop-go
#   - Python: tests/interop/requirements.txt (opentelemetry-distro for opentelemetry-instrument)
# <hash> is the first 16 hex digits of the sha256 of the files that define the install (the
# tests compute the same), so a changed lock or source installs anew and an unchanged one is
# reused. Nothing is downloaded when the tests run.
#
# Env: LLM_PIPELINE_CACHE (cache root, default ~/.cache/llm-otel-pipeline), PYTHON,
#      FORCE=1 (reinstall even if cached). A missing node/npm or go is an error under CI=1 and
#      a warning otherwise (the tests that need it then skip, or fail under CI).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_root="${LLM_PIPELINE_CACHE:-$HOME/.cache/llm-otel-pipeline}"
interop="$repo_root/tests/interop"
PY=${PYTHON:-python3}

log() { printf '[setup-interop] %s\n' "$*" >&2; }
missing() {
  if [[ -n "${CI:-}" ]]; then log "$1 not found; CI needs it for tests/interop"; exit 1; fi
  log "$1 not found; the tests/interop clients that need it will skip"
}
hash_of() { cat "$@" | sha256sum | cut -c1-16; }

start=$(date +%s)

# Python: only the distro is missing from the project's own dependencies. pip is asked only
# when a requirement is not met (a pip run that finds everything installed takes ~20 s).
if $PY - "$interop/requirements.txt" <<'PYEOF'
import sys
from importlib.metadata import PackageNotFoundError, version

from packaging.requirements import Requirement

for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if line:
        req = Requirement(line)
        try:
            met = req.specifier.contains(version(req.name), prereleases=True)
        except PackageNotFoundError:
            met = False
        if not met:
            sys.exit(1)
PYEOF
then
  log "python: requirements met"
else
  $PY -m pip install -q --disable-pip-version-check -r "$interop/requirements.txt"
fi

# Node.js: npm ci from the committed lock; install scripts are not needed (protobufjs' only
# checks its version) and are not run.
if command -v npm >/dev/null && command -v node >/dev/null; then
  node_dir="$cache_root/interop/node-$(hash_of "$interop/node/package.json" "$interop/node/package-lock.json")"
  if [[ -f "$node_dir/.complete" && "${FORCE:-0}" != 1 ]]; then
    log "node: cached $node_dir"
  else
    log "node: npm ci into $node_dir"
    rm -rf "$node_dir"
    mkdir -p "$node_dir"
    cp "$interop/node/package.json" "$interop/node/package-lock.json" "$node_dir/"
    (cd "$node_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >&2
    touch "$node_dir/.complete"
  fi
else
  missing "node/npm"
fi

# Go: one static binary; the modules come from the module proxy into Go's module cache.
if command -v go >/dev/null; then
  go_src="$interop/go"
  go_dir="$cache_root/interop/go-$(hash_of "$go_src/go.mod" "$go_src/go.sum" "$go_src/main.go")"
  if [[ -x "$go_dir/interop-go" && "${FORCE:-0}" != 1 ]]; then
    log "go: cached $go_dir/interop-go"
  else
    log "go: building $go_dir/interop-go (a few minutes on 2 cores when the modules are new)"
    mkdir -p "$go_dir"
    # never download another toolchain; the machines have 2 cores; go.sum must already hold
    # every module (-mod=readonly), so the build is what the committed files say
    (cd "$go_src" && GOTOOLCHAIN=local GOFLAGS="-p=2 -mod=readonly" CGO_ENABLED=0 \
      go build -trimpath -o "$go_dir/interop-go.tmp" .) >&2
    mv "$go_dir/interop-go.tmp" "$go_dir/interop-go"
  fi
else
  missing "go"
fi

log "done in $(( $(date +%s) - start ))s"

#!/usr/bin/env bash
# A Go toolchain recent enough for the Collector build: prints the directory to put first on
# PATH (the last line of stdout; messages go to stderr).
#
# The version needed is the `go` line of the OCB builder's go.mod (the builder version is the
# manifest's `# builder-version:` line). When the machine's go is missing or older, the newest
# patch release of that Go line is fetched from the Go module proxy as the module
# golang.org/toolchain (what GOTOOLCHAIN downloads use; go.dev itself is not needed) into
# ${LLM_PIPELINE_CACHE:-~/.cache/llm-otel-pipeline}/go/<version>.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_root="${LLM_PIPELINE_CACHE:-$HOME/.cache/llm-otel-pipeline}"
manifest="$repo_root/collector/builder-config.yaml"
log() { printf 'go: %s\n' "$*" >&2; }
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

proxy=$(go env GOPROXY 2>/dev/null || echo "${GOPROXY:-https://proxy.golang.org}")
proxy=$(tr ',|' '\n\n' <<<"$proxy" | grep -m1 '^http' || echo https://proxy.golang.org)
builder_version="$(sed -n 's/^# builder-version: *\(v[0-9][0-9.]*\) *$/\1/p' "$manifest" | head -n1)"
need=$(curl -fsS "$proxy/go.opentelemetry.io/collector/cmd/builder/@v/$builder_version.mod" |
  sed -n 's/^go \([0-9][0-9.]*\)$/\1/p' | head -n1) || true
need=${need:-1.26.0}

have=$(go env GOVERSION 2>/dev/null | sed 's/^go//') || have=""
if [ -n "$have" ] && version_ge "$have" "$need"; then
  log "using go$have from $(command -v go) (the Collector build needs >= $need)"
  dirname "$(command -v go)"
  exit 0
fi

if [ -n "$have" ]; then mine="go$have is older than $need"; else mine="no go on PATH"; fi
case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64 | arm64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
line=$(cut -d. -f1-2 <<<"$need")
pick=$(curl -fsS "$proxy/golang.org/toolchain/@v/list" | sed -n "s/^v0\.0\.1-go\($line\.[0-9]*\)\.linux-$arch$/\1/p" |
  sort -V | tail -n1)
[ -n "$pick" ] && version_ge "$pick" "$need" || pick=$need
dest="$cache_root/go/$pick"
if [ ! -x "$dest/bin/go" ]; then
  log "$mine: fetching go$pick (linux-$arch) from $proxy"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  curl -fsS -o "$tmp/go.zip" "$proxy/golang.org/toolchain/@v/v0.0.1-go$pick.linux-$arch.zip"
  python3 - "$tmp/go.zip" "$tmp/x" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
  mkdir -p "$(dirname "$dest")"
  rm -rf "$dest"
  mv "$tmp/x/golang.org/toolchain@v0.0.1-go$pick.linux-$arch" "$dest"
  # module zips carry no file modes: the binaries are bin/* and pkg/tool/*/*
  chmod +x "$dest"/bin/* "$dest"/pkg/tool/*/*
fi
log "using go$pick from $dest/bin ($mine)"
echo "$dest/bin"

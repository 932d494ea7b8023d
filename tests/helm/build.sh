#!/usr/bin/env bash
# Builds tests/helm/render.go (Go text/template + Sprig from Debian's packages, GOPATH mode) and
# prints the binary's path. Installs golang-go and the Go libraries with apt-get when missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
need=()
# Debian's Go libraries below are GOPATH-mode sources tested with Debian's Go 1.19: pin it.
go119=/usr/lib/go-1.19/bin
[[ -x $go119/go ]] || need+=(golang-1.19-go)
[[ -d /usr/share/gocode/src/github.com/Masterminds/sprig ]] || need+=(golang-github-masterminds-sprig-dev)
[[ -d /usr/share/gocode/src/sigs.k8s.io/yaml ]] || need+=(golang-k8s-sigs-yaml-dev)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >&2
fi
out="${CARGO_TARGET_DIR:-$here/../../target}/helm-render"
if [ ! -x "$out" ] || [ "$here/render.go" -nt "$out" ]; then
  mkdir -p "$(dirname "$out")"
  GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="${TMPDIR:-/tmp}/kairos-go-cache" \
    "$go119/go" build -o "$out" "$here/render.go" >&2
fi
echo "$out"

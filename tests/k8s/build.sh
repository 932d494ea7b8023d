#!/usr/bin/env bash
# Builds kube-apiserver and kube-controller-manager v1.20.2 from Debian's `kubernetes` source
# package (the only Kubernetes server source reachable here) and caches them, keyed by the source
# version, under $KAIROS_K8S_CACHE (default /var/cache/kairos). Prints the cache directory.
# About 5 minutes cold on 2 cores; instant when cached. See ../shared/k8s-apiserver.md.
set -euo pipefail

version="1.20.5+really1.20.2-1.1+deb12u1"
cache="${KAIROS_K8S_CACHE:-/var/cache/kairos}/kubernetes-$version"
if [[ -x "$cache/kube-apiserver" && -x "$cache/kube-controller-manager" ]]; then
  echo "$cache"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
need=()
# Kubernetes 1.20 builds with Go 1.19 (Debian's golang-1.19-go), not whatever `go` is on PATH
# (machines may carry a much newer Go whose toolchain rejects this tree).
go119=/usr/lib/go-1.19/bin
[[ -x $go119/go ]] || need+=(golang-1.19-go)
command -v etcd >/dev/null || need+=(etcd-server)
command -v rsync >/dev/null || need+=(rsync)
command -v dpkg-source >/dev/null || need+=(dpkg-dev)
command -v make >/dev/null || need+=(make)
command -v openssl >/dev/null || need+=(openssl)
command -v kubectl >/dev/null || need+=(kubernetes-client)
[[ -d /usr/share/gocode/src/github.com/modern-go/reflect2 ]] || need+=(golang-github-modern-go-reflect2-dev)
[[ -d /usr/share/gocode/src/github.com/json-iterator/go ]] || need+=(golang-github-json-iterator-go-dev)
if ((${#need[@]})); then
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >&2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A private sources list and state dir: the system's apt configuration stays untouched.
mkdir -p "$work/lists/partial"
cat >"$work/sources.list" <<SRC
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
SRC
apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=-"
  -o "Dir::State::Lists=$work/lists")
apt-get "${apt_opts[@]}" update -qq >&2
(cd "$work" && apt-get "${apt_opts[@]}" source --download-only "kubernetes=$version" >&2)
(cd "$work" && dpkg-source -x --no-check kubernetes_*.dsc src >&2)
src="$work/src"

# Go >= 1.18 crashes the vendored reflect2 1.0.1 / json-iterator 1.1.10 at the first custom
# resource write: use Debian's newer copies (non-test sources only).
for pair in "github.com/modern-go/reflect2" "github.com/json-iterator/go"; do
  rm -rf "$src/vendor/$pair"
  mkdir -p "$src/vendor/$pair"
  rsync -a --include='*/' --include='*.go' --include='*.s' --exclude='*_test.go' --exclude='*' \
    "/usr/share/gocode/src/$pair/" "$src/vendor/$pair/"
done

(
  cd "$src"
  unset GOFLAGS GO111MODULE
  export GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0 PATH="$go119:$PATH"
  make WHAT=cmd/kube-apiserver >&2
  make WHAT=cmd/kube-controller-manager >&2
)
$SUDO mkdir -p "$cache"
$SUDO cp "$src/_output/bin/kube-apiserver" "$src/_output/bin/kube-controller-manager" "$cache/"
echo "$cache"

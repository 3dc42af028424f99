#!/usr/bin/env bash
# Build the real Kubernetes control plane used by the end-to-end tests (tests/e2e):
# kube-apiserver, kube-controller-manager, kube-scheduler and etcd, from the Go module
# proxy, at the versions pinned in tests/e2e/go.mod and tests/e2e/etcd/go.mod.
#
#   scripts/build-control-plane.sh                 build if needed; last stdout line = bin dir
#   scripts/build-control-plane.sh --check         exit 0 if the binaries are up to date, 1 if not
#   scripts/build-control-plane.sh --print-bin-dir print the bin dir only (no build)
#   scripts/build-control-plane.sh --force         rebuild even when up to date
#
# Output: ${FAIRPACK_CACHE:-$HOME/.cache/fairpack}/k8s-<version>/bin/ with a stamp file
# (k8s-<version>/stamp) recording the pin; a changed pin (go.mod/go.sum, Go version,
# build flags) triggers a rebuild. Progress goes to stderr, the bin dir to stdout.
#
# Environment:
#   FAIRPACK_CACHE       cache root (default: $HOME/.cache/fairpack)
#   FAIRPACK_BUILD_JOBS  `go build -p` (default: 1, i.e. one package at a time; raise in CI)
#   FAIRPACK_BUILD_NICE  nice level (default: 19)
# The first build downloads about 1 GB of modules into $(go env GOMODCACHE) and compiles
# for 10-25 minutes on two cores; later runs take under a second.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
e2e="$root/tests/e2e"

mode=build
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  --print-bin-dir) mode=print ;;
  --force) mode=force ;;
  -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "build-control-plane: unknown argument: $1 (try --help)" >&2; exit 2 ;;
esac

log() { printf 'build-control-plane: %s\n' "$*" >&2; }

# Pins, read from the go.mod files (the single source of truth).
pin_of() { awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$2"; }
kube_version=$(pin_of k8s.io/kubernetes "$e2e/go.mod")
etcd_version=$(pin_of go.etcd.io/etcd/server/v3 "$e2e/etcd/go.mod")
if [[ -z "$kube_version" || -z "$etcd_version" ]]; then
  log "error: cannot read the k8s.io/kubernetes / etcd pins from $e2e/go.mod, $e2e/etcd/go.mod"
  exit 2
fi

cache_root=${FAIRPACK_CACHE:-$HOME/.cache/fairpack}
out="$cache_root/k8s-$kube_version"
bin="$out/bin"
if [[ $mode == print ]]; then
  echo "$bin"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  log "error: the Go toolchain ('go') is not on PATH."
  log "  The end-to-end tests build kube-apiserver, kube-controller-manager, kube-scheduler"
  log "  and etcd $etcd_version from the Go module proxy (Kubernetes $kube_version)."
  log "  Install Go >= 1.25 (e.g. from https://go.dev/dl or 'apt-get install golang-go' if"
  log "  recent enough), then run: scripts/build-control-plane.sh"
  exit 127
fi

jobs=${FAIRPACK_BUILD_JOBS:-1}
nice_level=${FAIRPACK_BUILD_NICE:-19}
minor=${kube_version#v1.}; minor=${minor%%.*}
# Version information, as hack/lib/version.sh sets it for release builds, so that
# `kube-apiserver --version` and /version report the real release instead of v0.0.0.
ver_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ver_ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ver_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
kube_ldflags="-s -w$ver_ldflags"
etcd_ldflags="-s -w"
go_version=$(go env GOVERSION)

sum_of() { cat "$@" | sha256sum | cut -d' ' -f1; }
stamp_text() {
  printf 'kubernetes %s\netcd %s\ngo %s\nbuild CGO_ENABLED=0 -trimpath\n' \
    "$kube_version" "$etcd_version" "$go_version"
  printf 'kube-ldflags %s\netcd-ldflags %s\n' "$kube_ldflags" "$etcd_ldflags"
  printf 'modules %s\n' "$(sum_of "$e2e/go.mod" "$e2e/go.sum" "$e2e/etcd/go.mod" "$e2e/etcd/go.sum")"
}
binaries=(kube-apiserver kube-controller-manager kube-scheduler etcd)

up_to_date() {
  [[ -f "$out/stamp" ]] || return 1
  [[ "$(cat "$out/stamp")" == "$(stamp_text)" ]] || return 1
  local b
  for b in "${binaries[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
}

if [[ $mode == check ]]; then
  if up_to_date; then log "up to date: $bin"; exit 0; fi
  log "not built (or pin changed): $bin"
  exit 1
fi

mkdir -p "$cache_root"
# One build at a time per cache (two pytest sessions may start together).
exec 9>"$cache_root/.build-k8s-$kube_version.lock"
if command -v flock >/dev/null 2>&1; then
  if ! flock -n 9; then
    log "another build holds $cache_root/.build-k8s-$kube_version.lock; waiting"
    flock 9
  fi
fi

if [[ $mode != force ]] && up_to_date; then
  log "up to date: Kubernetes $kube_version, etcd $etcd_version in $bin"
  echo "$bin"
  exit 0
fi

start=$(date +%s)
log "building Kubernetes $kube_version control plane + etcd $etcd_version with $go_version"
log "  into $bin (go build -p $jobs, nice -n $nice_level, CGO_ENABLED=0, -trimpath)"
tmp="$out/bin.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

export CGO_ENABLED=0
export GOFLAGS="$(go env GOFLAGS) -mod=readonly"

step() {  # step <module dir> <ldflags> <output name> <package>
  local dir=$1 ldflags=$2 name=$3 pkg=$4 t0
  t0=$(date +%s)
  log "  go build $pkg"
  (cd "$dir" && nice -n "$nice_level" go build -p "$jobs" -trimpath -ldflags="$ldflags" \
      -o "$tmp/$name" "$pkg")
  log "    $name: $(( $(date +%s) - t0 ))s, $(du -h "$tmp/$name" | cut -f1)"
}

# Download first so that network time and compile time are reported separately.
t0=$(date +%s)
log "  go mod download (module cache: $(go env GOMODCACHE))"
(cd "$e2e" && nice -n "$nice_level" go mod download)
(cd "$e2e/etcd" && nice -n "$nice_level" go mod download)
log "    download: $(( $(date +%s) - t0 ))s"

step "$e2e/etcd" "$etcd_ldflags" etcd go.etcd.io/etcd/server/v3
step "$e2e" "$kube_ldflags" kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
step "$e2e" "$kube_ldflags" kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
step "$e2e" "$kube_ldflags" kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler

rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
stamp_text > "$out/stamp"
log "done in $(( $(date +%s) - start ))s: $(du -sh "$bin" | cut -f1) in $bin"
echo "$bin"

#!/usr/bin/env bash
# Builds the local control plane and test tools from the Go module proxy and
# caches them outside the repository, one directory per version, so a warm
# machine rebuilds nothing. Prints the bin directory on stdout.
#
#   tests/tools/build.sh            # build what is missing, print the bin dir
#   tests/tools/build.sh --print    # only print the bin dir
#
# Versions live here and nowhere else; the Rust harness asks this script.
set -euo pipefail

KUBERNETES_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
CERT_MANAGER_VERSION=v1.21.1

here=$(cd "$(dirname "$0")" && pwd)
cache=${CONCLAVE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/conclave/tools}
bin="$cache/k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION-cm-$CERT_MANAGER_VERSION"

if [[ "${1:-}" == "--print" ]]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bin"
log() { echo "[tools] $*" >&2; }

export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local

build_kubernetes() {
  local minor=${KUBERNETES_VERSION#v1.}
  minor=${minor%%.*}
  local ldflags=""
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    if [[ ! -x "$bin/$cmd" ]]; then
      log "building $cmd $KUBERNETES_VERSION (cold builds take several minutes)"
      (cd "$here/kubernetes" && go build -trimpath -ldflags "-s -w $ldflags" -o "$bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd")
      mv "$bin/$cmd.tmp" "$bin/$cmd"
    fi
  done
}

build_etcd() {
  if [[ ! -x "$bin/etcd" ]]; then
    log "building etcd $ETCD_VERSION"
    (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3)
    mv "$bin/etcd.tmp" "$bin/etcd"
  fi
}

# kwok and helm build cleanly with a plain `go install` at a version.
go_install() {
  local name=$1 module=$2
  if [[ ! -x "$bin/$name" ]]; then
    log "building $name from $module"
    GOBIN="$bin/.gobin-$name" go install -trimpath -ldflags "-s -w" "$module"
    mv "$bin/.gobin-$name/$name" "$bin/$name"
    rmdir "$bin/.gobin-$name"
  fi
}

# cert-manager's CRDs come from its Go module, the same route as the binaries,
# so tests validate Certificates against the real schema without ../shared.
fetch_cert_manager_crds() {
  if [[ ! -f "$bin/cert-manager-crds/.done" ]]; then
    log "fetching cert-manager $CERT_MANAGER_VERSION CRDs"
    local dir
    dir=$(cd "$here/etcd" && GOFLAGS=-mod=mod go mod download -json "github.com/cert-manager/cert-manager@$CERT_MANAGER_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    mkdir -p "$bin/cert-manager-crds"
    cp "$dir"/deploy/crds/cert-manager.io_*.yaml "$bin/cert-manager-crds/"
    touch "$bin/cert-manager-crds/.done"
  fi
}

build_etcd
build_kubernetes
go_install kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
go_install helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fetch_cert_manager_crds

echo "$bin"

#!/usr/bin/env bash
# Builds the local control plane and test tools from the Go module proxy and
# caches them outside the repository, one directory per version set, so a warm
# machine rebuilds nothing. Two sets, each in its own directory:
#
#   k8s      etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
#            kubectl, kwok, helm, cert-manager-crds/
#   livekit  livekit-server, and lkclient (our test client, tests/tools/lkclient,
#            rebuilt whenever its sources change)
#
#   tests/tools/build.sh                  # build what is missing in both sets, print the k8s dir
#   tests/tools/build.sh --print          # only print the k8s dir
#   tests/tools/build.sh livekit          # build what is missing in the livekit set, print its dir
#   tests/tools/build.sh --print livekit  # only print the livekit dir
#   tests/tools/build.sh k8s              # the k8s set alone
#   tests/tools/build.sh --jitsi          # the Jitsi contract test's tools, as name=path lines
#
# stdout is exactly one line, the directory (--jitsi: name=path lines); progress goes to stderr.
# Versions live here and nowhere else (lkclient's go.mod must agree, which is
# checked); the Rust harness asks this script (testenv/src/tools.rs).
set -euo pipefail

KUBERNETES_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
CERT_MANAGER_VERSION=v1.21.1
# Later livekit-server tags replace pion with LiveKit forks the module proxy does not serve.
LIVEKIT_SERVER_VERSION=v1.13.5
# lkclient's LiveKit SDK; go.mod/go.sum pin it and the protocol module it requires.
LIVEKIT_SDK_VERSION=v2.19.0
# The Jitsi contract test (tests/jitsi_contract.rs): the docker-jitsi-meet tag the operator pins
# its images to, the tpl its base image renders templates with, and Lightbend Config
# (com.typesafe:config), the HOCON parser jicofo and the videobridge read their config with.
DJM_TAG=stable-11146-2
TPL_VERSION=v1.5.0
HOCON_VERSION=1.4.3

here=$(cd "$(dirname "$0")" && pwd)
cache=${CONCLAVE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/conclave/tools}
bin="$cache/k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION-cm-$CERT_MANAGER_VERSION"
# lkclient's stamp covers its go.mod, so an SDK bump rebuilds lkclient, not livekit-server.
livekit_bin="$cache/livekit-server-$LIVEKIT_SERVER_VERSION"

print_only=false
if [[ "${1:-}" == "--print" ]]; then
  print_only=true
  shift
fi
set_name=${1:-all}
case "$set_name" in
  all | k8s) out_dir=$bin ;;
  livekit) out_dir=$livekit_bin ;;
  --jitsi) out_dir="" ;; # handled below, once its functions are defined
  *)
    echo "usage: $0 [--print] [k8s|livekit] | $0 --jitsi" >&2
    exit 2
    ;;
esac
if $print_only; then
  echo "$out_dir"
  exit 0
fi

log() { echo "[tools] $*" >&2; }

# --- Jitsi contract test tools ---------------------------------------------------------------
# Sources, in order: the CONCLAVE_DJM_DIR / CONCLAVE_TPL_SRC variables; ../shared/testdata
# beside the repository (or beside the main checkout, from a git worktree); a shallow clone of
# the upstream repository at the pinned tag (machines with internet). Nothing found is an
# error naming all three, so the test can skip (or fail under CI) with the reason.

repo=$(cd "$here/../.." && pwd)

# The shared test data directories that may hold pinned upstream sources.
shared_testdata_dirs() {
  echo "$repo/../shared/testdata"
  local common
  if common=$(git -C "$repo" rev-parse --path-format=absolute --git-common-dir 2>/dev/null); then
    echo "$(dirname "$common")/../shared/testdata"
  fi
}

# Prints the directory holding upstream source `name` (a testdata directory name), checking
# that `marker` exists in it: the variable `var` first, then shared test data, then a shallow
# clone of `url` at `tag` into the cache.
jitsi_source() {
  local var=$1 name=$2 marker=$3 url=$4 tag=$5 dir
  if [[ -n "${!var:-}" ]]; then
    [[ -e "${!var}/$marker" ]] || { log "$var=${!var} has no $marker"; return 1; }
    echo "${!var}"
    return
  fi
  while read -r dir; do
    if [[ -e "$dir/$name/$marker" ]]; then
      (cd "$dir/$name" && pwd)
      return
    fi
  done < <(shared_testdata_dirs)
  dir="$cache/src/$name"
  if [[ ! -e "$dir/$marker" ]]; then
    log "cloning $url at $tag (neither $var nor ../shared/testdata/$name is available)"
    rm -rf "$dir.tmp"
    if ! git clone -q --depth 1 --branch "$tag" "$url" "$dir.tmp" >&2; then
      log "no source for $name: set $var, provide ../shared/testdata/$name, or allow access to $url"
      rm -rf "$dir.tmp"
      return 1
    fi
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
  fi
  echo "$dir"
}

# tpl, built once per version from its source (not served by the module proxy as a module;
# its dependencies are, through its go.sum).
build_tpl() {
  local out="$cache/jitsi-tpl-$TPL_VERSION/tpl" src
  if [[ ! -x "$out" ]]; then
    src=$(jitsi_source CONCLAVE_TPL_SRC "jitsi-tpl-$TPL_VERSION" go.mod https://github.com/jitsi/tpl "$TPL_VERSION") || return 1
    log "building tpl $TPL_VERSION from $src"
    mkdir -p "$(dirname "$out")"
    (cd "$src" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=local go build -trimpath -ldflags "-s -w" -o "$out.tmp" .) || return 1
    mv "$out.tmp" "$out"
  fi
  echo "$out"
}

# Lightbend Config's jar, through Maven (no transitive resolution: the library has no runtime
# dependencies, and its POM names a test artifact that is not published).
fetch_hocon() {
  local dir="$cache/typesafe-config-$HOCON_VERSION" jar
  jar="$dir/config-$HOCON_VERSION.jar"
  if [[ ! -f "$jar" ]]; then
    command -v mvn >/dev/null || { log "mvn is needed to fetch com.typesafe:config $HOCON_VERSION"; return 1; }
    log "fetching com.typesafe:config $HOCON_VERSION"
    mkdir -p "$dir"
    mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy \
      "-Dartifact=com.typesafe:config:$HOCON_VERSION" "-DoutputDirectory=$dir" >&2 || return 1
  fi
  echo "$jar"
}

jitsi_tools() {
  local djm tpl hocon
  djm=$(jitsi_source CONCLAVE_DJM_DIR "docker-jitsi-meet-$DJM_TAG" web/rootfs/defaults/meet.conf \
    https://github.com/jitsi/docker-jitsi-meet "$DJM_TAG") || return 1
  tpl=$(build_tpl) || return 1
  hocon=$(fetch_hocon) || return 1
  echo "djm=$djm"
  echo "tpl=$tpl"
  echo "hocon=$hocon"
}

if [[ "${1:-}" == "--jitsi" ]]; then
  jitsi_tools
  exit
fi
# ----------------------------------------------------------------------------------------------

mkdir -p "$bin"

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

# kwok, helm and livekit-server build cleanly with a plain `go install` at a
# version. go_install DIR NAME MODULE [BUILT]: BUILT is the name `go install`
# gives the binary when it differs from NAME.
go_install() {
  local dir=$1 name=$2 module=$3 built=${4:-$2}
  if [[ ! -x "$dir/$name" ]]; then
    log "building $name from $module"
    GOBIN="$dir/.gobin-$name" go install -trimpath -ldflags "-s -w" "$module"
    mv "$dir/.gobin-$name/$built" "$dir/$name"
    rmdir "$dir/.gobin-$name"
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

# lkclient is rebuilt when its sources change: the stamp holds their hash.
build_lkclient() {
  local src="$here/lkclient" pinned sum
  pinned=$(awk '$1 == "github.com/livekit/server-sdk-go/v2" { print $2 }' "$src/go.mod")
  if [[ "$pinned" != "$LIVEKIT_SDK_VERSION" ]]; then
    echo "tests/tools/lkclient/go.mod requires server-sdk-go $pinned, build.sh says $LIVEKIT_SDK_VERSION" >&2
    exit 1
  fi
  sum=$(cd "$src" && sha256sum go.mod go.sum ./*.go | sha256sum | cut -d' ' -f1)
  if [[ ! -x "$livekit_bin/lkclient" || "$(cat "$livekit_bin/lkclient.sha256" 2>/dev/null)" != "$sum" ]]; then
    log "building lkclient (server-sdk-go $LIVEKIT_SDK_VERSION)"
    (cd "$src" && GOFLAGS="$GOFLAGS -mod=readonly" go build -trimpath -ldflags "-s -w" -o "$livekit_bin/lkclient.tmp" .)
    mv "$livekit_bin/lkclient.tmp" "$livekit_bin/lkclient"
    echo "$sum" >"$livekit_bin/lkclient.sha256"
  fi
}

build_k8s_set() {
  mkdir -p "$bin"
  build_etcd
  build_kubernetes
  go_install "$bin" kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  go_install "$bin" helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  fetch_cert_manager_crds
}

build_livekit_set() {
  mkdir -p "$livekit_bin"
  # One builder at a time: concurrent test binaries would otherwise each spend
  # minutes on the same cold build.
  exec 9>"$livekit_bin/.lock"
  flock 9
  go_install "$livekit_bin" livekit-server "github.com/livekit/livekit-server/cmd/server@$LIVEKIT_SERVER_VERSION" server
  build_lkclient
  exec 9>&-
}

case "$set_name" in
  all)
    build_k8s_set
    build_livekit_set
    ;;
  k8s) build_k8s_set ;;
  livekit) build_livekit_set ;;
esac

echo "$out_dir"

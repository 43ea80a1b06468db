#!/usr/bin/env bash
# Builds the binaries that the local control plane and the install tests need, from Go modules at
# pinned versions, and caches them under ~/.cache/kuberunner/bin/<name>-<version>.
# Nothing is downloaded from release pages: every binary comes from the Go module proxy.
#   hack/build-tools.sh            build whatever is missing
#   hack/build-tools.sh [STEP]     build only STEP (k8s, etcd, kwok, helm, kubeconform, node,
#                                  prometheus)
#   hack/build-tools.sh --print    print the cached path of each binary (name=path), build nothing
set -euo pipefail
SCRIPT=$(realpath "$0")

K8S_VERSION=v1.36.2
K8S_STAGING_VERSION=v0.36.2
ETCD_VERSION=v3.6.8
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.21.4
KUBECONFORM_VERSION=v0.7.0
# Prometheus v3.16.0 (its Go module numbers v3.X as v0.3XX). Debian's package leaves out the
# Kubernetes service discovery; this build keeps only that one (build tags, a smaller build).
PROMETHEUS_VERSION=v0.316.0
# The real node: kubelet and kube-proxy come from the k8s wrapper module (K8S_VERSION).
CONTAINERD_VERSION=v2.4.2
CNI_PLUGINS_VERSION=v1.10.0
COREDNS_VERSION=v1.15.0
# Our own sandbox ("pause") image: a static binary that waits for a signal (hack/pause/).
PAUSE_VERSION=1.0

CACHE=${KUBERUNNER_CACHE:-$HOME/.cache/kuberunner}
BIN=$CACHE/bin
WORK=$CACHE/build
mkdir -p "$BIN" "$WORK"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-trimpath

STAGING="api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
cri-client cri-streaming csi-translation-lib dynamic-resource-allocation endpointslice externaljwt
kms kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller streaming"

# die STEP TARGET: name the failed step and the command that retries just that part.
die() {
  echo "build-tools: step '$1' failed. Retry with: bash $SCRIPT ${2:-all}" >&2
  exit 1
}

# A cached binary counts only if it runs; a truncated or corrupt file is rebuilt.
# (The subshell keeps bash's "Segmentation fault" report of a corrupt binary off the terminal.)
usable() { [[ -x "$1" ]] && ("$1" "${@:2}") >/dev/null 2>&1; }

path_of() { echo "$BIN/$1-$2"; }

K8S_TOOLS="kube-apiserver kube-controller-manager kube-scheduler kubectl"
NODE_K8S_TOOLS="kubelet kube-proxy"
CNI_PLUGINS="bridge host-local loopback portmap"

# kubectl answers `--version` only with a client-side flag; the server binaries take plain --version.
k8s_usable() {
  if [[ $1 == kubectl ]]; then usable "$(path_of kubectl $K8S_VERSION)" version --client
  else usable "$(path_of "$1" $K8S_VERSION)" --version; fi
}

# build_k8s TOOL...: the named k8s.io/kubernetes/cmd/* binaries, those missing or broken.
build_k8s() {
  local missing=()
  for c in "$@"; do k8s_usable "$c" || missing+=("$c"); done
  ((${#missing[@]})) || return 0
  echo "build-tools: building ${missing[*]} $K8S_VERSION (cold: ~5-10 min)" >&2
  local dir=$WORK/k8s-$K8S_VERSION
  mkdir -p "$dir"
  # k8s.io/kubernetes requires its staging modules at v0.0.0, so a wrapper module pins them.
  {
    echo "module localbuild/k8s"
    echo
    echo "go 1.26.0"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    for m in $STAGING; do echo "replace k8s.io/$m => k8s.io/$m $K8S_STAGING_VERSION"; done
  } >"$dir/go.mod.want"
  # Keep the resolved go.mod (and go.sum) of an earlier run unless the pins changed.
  if ! cmp -s "$dir/go.mod.want" "$dir/go.mod.pins" 2>/dev/null; then
    cp "$dir/go.mod.want" "$dir/go.mod"
    cp "$dir/go.mod.want" "$dir/go.mod.pins"
    rm -f "$dir/go.sum"
  fi
  cat >"$dir/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  (cd "$dir" && go get "k8s.io/kubernetes@$K8S_VERSION" && go mod tidy -e) || die "go get k8s.io/kubernetes@$K8S_VERSION" k8s
  for c in "${missing[@]}"; do
    echo "build-tools: go build $c" >&2
    (cd "$dir" && go build -ldflags "$ld" -o "$dir/$c.new" "k8s.io/kubernetes/cmd/$c") || die "go build $c" k8s
    mv "$dir/$c.new" "$(path_of "$c" $K8S_VERSION)"
    k8s_usable "$c" || die "run $c after build" k8s
  done
}

# containerd, ctr and the runc shim, without CGO: the tags drop the snapshotters that need C.
containerd_usable() { usable "$(path_of "$1" $CONTAINERD_VERSION)" --version; }
build_containerd() {
  local c missing=()
  for c in containerd ctr containerd-shim-runc-v2; do containerd_usable "$c" || missing+=("$c"); done
  ((${#missing[@]})) || return 0
  echo "build-tools: building ${missing[*]} $CONTAINERD_VERSION" >&2
  local gobin=$WORK/gobin-containerd-$CONTAINERD_VERSION
  for c in "${missing[@]}"; do
    GOBIN=$gobin go install -tags "no_btrfs no_devmapper no_zfs" \
      -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
      "github.com/containerd/containerd/v2/cmd/$c@$CONTAINERD_VERSION" || die "go install $c" node
    mv "$gobin/$c" "$(path_of "$c" $CONTAINERD_VERSION)"
    containerd_usable "$c" || die "run $c after build" node
  done
}

# CNI plugins answer CNI_COMMAND=VERSION with their supported spec versions.
cni_usable() { [[ -x "$1" ]] && CNI_COMMAND=VERSION "$1" </dev/null >/dev/null 2>&1; }
build_cni() {
  local p pkg
  for p in $CNI_PLUGINS; do
    cni_usable "$(path_of "cni-$p" $CNI_PLUGINS_VERSION)" && continue
    case $p in host-local) pkg=ipam/$p ;; portmap) pkg=meta/$p ;; *) pkg=main/$p ;; esac
    echo "build-tools: building CNI plugin $p $CNI_PLUGINS_VERSION" >&2
    local gobin=$WORK/gobin-cni-$CNI_PLUGINS_VERSION
    GOBIN=$gobin go install \
      -ldflags "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" \
      "github.com/containernetworking/plugins/plugins/$pkg@$CNI_PLUGINS_VERSION" || die "go install CNI $p" node
    mv "$gobin/$p" "$(path_of "cni-$p" $CNI_PLUGINS_VERSION)"
  done
}

# CoreDNS's go.mod has no replace directives, so a plain go install works.
build_coredns() { STEP=node go_install coredns "$COREDNS_VERSION" github.com/coredns/coredns "" -version; }

# The pause binary and an OCI archive holding it as localhost/kuberunner-pause:$PAUSE_VERSION.
ROOT=$(cd "$(dirname "$SCRIPT")/.." && pwd)
pause_image() { echo "$BIN/pause-$PAUSE_VERSION.oci.tar"; }
build_pause() {
  local bin
  bin=$(path_of pause $PAUSE_VERSION)
  if [[ ! -x $bin ]] || ! cmp -s "$ROOT/hack/pause/main.go" "$WORK/pause-$PAUSE_VERSION/main.go"; then
    echo "build-tools: building pause $PAUSE_VERSION" >&2
    local dir=$WORK/pause-$PAUSE_VERSION
    mkdir -p "$dir"
    cp "$ROOT/hack/pause/main.go" "$dir/main.go"
    printf 'module localbuild/pause\n\ngo 1.26.0\n' >"$dir/go.mod"
    (cd "$dir" && go build -ldflags "-s -w" -o "$bin.new" .) || die "go build pause" node
    mv "$bin.new" "$bin"
    rm -f "$(pause_image)"
  fi
  [[ -s $(pause_image) ]] && return 0
  python3 "$ROOT/hack/pause/oci_archive.py" "$bin" "localhost/kuberunner-pause:$PAUSE_VERSION" \
    "$(pause_image).new" || die "make the pause OCI archive" node
  mv "$(pause_image).new" "$(pause_image)"
}

build_node() {
  build_k8s $NODE_K8S_TOOLS
  build_containerd
  build_cni
  build_coredns
  build_pause
}

build_etcd() {
  usable "$(path_of etcd $ETCD_VERSION)" --version && return 0
  echo "build-tools: building etcd $ETCD_VERSION" >&2
  local dir=$WORK/etcd-$ETCD_VERSION
  mkdir -p "$dir"
  printf 'module localbuild/etcd\n\ngo 1.25.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >"$dir/go.mod"
  cat >"$dir/main.go" <<'GO'
// A wrapper main: etcd's own server module uses local replace directives, so it cannot be go-installed.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$dir" && go mod tidy) || die "go mod tidy (etcd $ETCD_VERSION)" etcd
  (cd "$dir" && go build -ldflags "-s -w" -o "$dir/etcd.new" .) || die "go build etcd" etcd
  mv "$dir/etcd.new" "$(path_of etcd $ETCD_VERSION)"
}

go_install() { # name version package
  local name=$1 version=$2 pkg=$3 ldflags=${4:-}
  usable "$(path_of "$name" "$version")" "${@:5}" && return 0
  echo "build-tools: building $name $version" >&2
  local gobin=$WORK/gobin-$name-$version
  GOBIN=$gobin go install -ldflags "-s -w $ldflags" "$pkg@$version" || die "go install $pkg@$version" "${STEP:-$name}"
  mv "$gobin/$name" "$(path_of "$name" "$version")"
}

build_kwok() { go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" --help; }
build_helm() {
  go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
    "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" version
}
build_kubeconform() {
  go_install kubeconform "$KUBECONFORM_VERSION" github.com/yannh/kubeconform/cmd/kubeconform \
    "-X main.version=$KUBECONFORM_VERSION" -v
}

build_prometheus() {
  usable "$(path_of prometheus $PROMETHEUS_VERSION)" --version && return 0
  echo "build-tools: building prometheus $PROMETHEUS_VERSION" >&2
  local gobin=$WORK/gobin-prometheus-$PROMETHEUS_VERSION
  GOBIN=$gobin go install -tags "remove_all_sd enable_kubernetes_sd" -ldflags "-s -w" \
    "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION" ||
    die "go install prometheus@$PROMETHEUS_VERSION" prometheus
  mv "$gobin/prometheus" "$(path_of prometheus $PROMETHEUS_VERSION)"
}

# The kwok module (downloaded for the kwok build) ships the stock stage files we pass with --config.
kwok_stages_dir() {
  (cd "$WORK" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION") |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'
}

print_paths() {
  for c in $K8S_TOOLS $NODE_K8S_TOOLS; do echo "$c=$(path_of "$c" $K8S_VERSION)"; done
  for c in containerd ctr containerd-shim-runc-v2; do echo "$c=$(path_of "$c" $CONTAINERD_VERSION)"; done
  for p in $CNI_PLUGINS; do echo "cni-$p=$(path_of "cni-$p" $CNI_PLUGINS_VERSION)"; done
  echo "coredns=$(path_of coredns $COREDNS_VERSION)"
  echo "pause=$(path_of pause $PAUSE_VERSION)"
  echo "pause-image=$(pause_image)"
  echo "pause-image-name=localhost/kuberunner-pause:$PAUSE_VERSION"
  echo "etcd=$(path_of etcd $ETCD_VERSION)"
  echo "kwok=$(path_of kwok $KWOK_VERSION)"
  echo "helm=$(path_of helm $HELM_VERSION)"
  echo "kubeconform=$(path_of kubeconform $KUBECONFORM_VERSION)"
  echo "prometheus=$(path_of prometheus $PROMETHEUS_VERSION)"
  echo "kwok-module=$(kwok_stages_dir)"
  echo "k8s-version=$K8S_VERSION"
}

if [[ ${1:-} == --print ]]; then print_paths; exit 0; fi
only=${1:-all}
# One build at a time per cache: concurrent runs (two test sessions, say) would race on the
# shared work dirs. A waiting run then finds the binaries built and returns at once.
exec 9>"$CACHE/build.lock"
if ! flock -n 9; then
  echo "build-tools: another build is running; waiting for it" >&2
  flock 9
fi
case $only in
  all) build_etcd; build_kwok; build_helm; build_kubeconform; build_k8s $K8S_TOOLS; build_node
       build_prometheus ;;
  k8s) build_k8s $K8S_TOOLS ;; node) build_node ;; etcd) build_etcd ;; kwok) build_kwok ;; helm) build_helm ;; kubeconform) build_kubeconform ;;
  prometheus) build_prometheus ;;
  *) echo "usage: $0 [--print|all|k8s|etcd|kwok|helm|kubeconform|node|prometheus]" >&2; exit 2 ;;
esac
echo "build-tools: all binaries ready in $BIN" >&2

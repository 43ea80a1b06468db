#!/usr/bin/env bash
# Builds the kuberunner container images with podman, without a Docker engine or a registry.
#
#   hack/build-images.sh               build what is missing or stale, print image sizes
#   hack/build-images.sh --print-env   print the CONTAINERS_* variables (KEY=VALUE lines) to use
#                                      the same private podman store; builds nothing
#   hack/build-images.sh --base-only   install tools and make the base image only
#
# Steps (each skipped when its result is cached):
#   1. install podman, buildah, debootstrap, runc, uidmap, catatonit from Debian when missing;
#   2. render hack/containers/*.conf.in into the cache; CONTAINERS_CONF and
#      CONTAINERS_STORAGE_CONF point podman at them, so the host's global config stays untouched;
#   3. make the base image localhost/kuberunner-base:bookworm from a debootstrap rootfs (1-3 min cold;
#      the rootfs tarball and the image are keyed by the debootstrap parameters and reused);
#   4. podman build the `runner` and `operator` targets of the Dockerfile on that base.
#
# Environment: KUBERUNNER_CACHE (default ~/.cache/kuberunner), KUBERUNNER_IMAGE_TAG (default dev),
# KUBERUNNER_TARGETS (default "runner operator"), DEBIAN_MIRROR (default: the host's apt mirror).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${KUBERUNNER_CACHE:-$HOME/.cache/kuberunner}
STATE=$CACHE/containers
TAG=${KUBERUNNER_IMAGE_TAG:-dev}
TARGETS=${KUBERUNNER_TARGETS:-runner operator}
BASE_IMAGE=localhost/kuberunner-base:bookworm
SUITE=bookworm
INCLUDE=python3,python3-venv,python3-pip,ca-certificates
CA=/etc/ssl/certs/ca-certificates.crt

log() { echo "build-images: $*" >&2; }
die() { log "error: $*"; exit 1; }

export CONTAINERS_CONF=$STATE/containers.conf
export CONTAINERS_STORAGE_CONF=$STATE/storage.conf

if [[ ${1:-} == --print-env ]]; then
  echo "CONTAINERS_CONF=$CONTAINERS_CONF"
  echo "CONTAINERS_STORAGE_CONF=$CONTAINERS_STORAGE_CONF"
  exit 0
fi

install_tools() {
  local want=(podman buildah debootstrap runc uidmap catatonit) missing=()
  for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]}"
  [[ $(id -u) == 0 ]] || die "need root to apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Render a template only when its content changed, so podman sees a stable file.
render() { # template output
  local tmp
  tmp=$(mktemp "$2.XXXXXX")
  sed "s|@STATE@|$STATE|g" "$1" >"$tmp"
  if cmp -s "$tmp" "$2"; then rm -f "$tmp"; else mv "$tmp" "$2"; fi
}

write_config() {
  mkdir -p "$STATE/tmp" "$STATE/storage" "$STATE/run"
  render "$ROOT/hack/containers/containers.conf.in" "$CONTAINERS_CONF"
  render "$ROOT/hack/containers/storage.conf.in" "$CONTAINERS_STORAGE_CONF"
}

# The apt mirror the host uses (deb822 or one-line sources), unless DEBIAN_MIRROR is given.
debian_mirror() {
  if [[ -n ${DEBIAN_MIRROR:-} ]]; then echo "$DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '/^URIs:/ {for (i = 2; i <= NF; i++) if ($i !~ /security/) {print $i; exit}}')
  if [[ -z $uri ]]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' \
      /etc/apt/sources.list 2>/dev/null || true)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

image_exists() { podman image exists "$1"; }
image_label() { podman image inspect --format "{{index .Labels \"$2\"}}" "$1" 2>/dev/null; }

# Files the images never need at run time: package caches and lists, docs, man pages and message
# translations (~35 MB). Applied when the image is imported, so changing it needs no debootstrap.
# (Glob patterns, relative to the rootfs; expanded inside it.)
TRIM_GLOBS="var/cache/apt/archives/*.deb var/cache/apt/*.bin var/lib/apt/lists/* usr/share/doc/*
  usr/share/man/* usr/share/info/* usr/share/locale/* var/log/*.log"
TRIM_REVISION=2

make_base() {
  local mirror key image_key tarball
  mirror=$(debian_mirror)
  # The key names everything that decides the rootfs; bump the trailing number to force a rebuild.
  key=$(printf '%s\n' "$SUITE" "minbase" "$INCLUDE" "$mirror" "$(dpkg --print-architecture)" 1 |
    sha256sum | cut -c1-16)
  image_key=$key-trim$TRIM_REVISION
  if image_exists "$BASE_IMAGE" && [[ $(image_label "$BASE_IMAGE" io.kuberunner.base-key) == "$image_key" ]]; then
    log "base image $BASE_IMAGE is current ($image_key)"
    return 0
  fi
  mkdir -p "$CACHE/images"
  tarball=$CACHE/images/base-$SUITE-$key.tar
  if [[ ! -s $tarball ]]; then
    local rootfs=$CACHE/images/rootfs-$SUITE-$key t0=$SECONDS
    log "debootstrap $SUITE ($INCLUDE) from $mirror (cold: 1-3 min, depending on load)"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$rootfs" "$mirror" \
      >"$CACHE/images/debootstrap.log" 2>&1 || die "debootstrap failed, see $CACHE/images/debootstrap.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin
    tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
    log "debootstrap done in $((SECONDS - t0)) s"
  fi
  log "importing $tarball as $BASE_IMAGE"
  local tree
  tree=$(mktemp -d "$CACHE/images/import.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$tree'" EXIT
  tar -C "$tree" --numeric-owner -xf "$tarball"
  # shellcheck disable=SC2086
  (cd "$tree" && shopt -s nullglob && rm -rf $TRIM_GLOBS)
  tar -C "$tree" --numeric-owner -c . |
    podman import --quiet \
      --change "LABEL io.kuberunner.base-key=$image_key" \
      --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
      --change "ENV LANG=C.UTF-8" \
      --change 'CMD ["/bin/bash"]' \
      - "$BASE_IMAGE" >/dev/null
  rm -rf "$tree"
  trap - EXIT
}

build_target() { # target
  local target=$1 image=localhost/kuberunner-$1:$TAG version source t0=$SECONDS
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -1)
  local source_args=()
  # Only a public URL is a meaningful image source; a clone of a local path keeps the default.
  if source=$(git -C "$ROOT" remote get-url origin 2>/dev/null) && [[ $source == https://* ]]; then
    source_args=(--build-arg "SOURCE=$source")
  fi
  local previous
  previous=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
  log "building $image (target $target)"
  # The CA bundle is mounted only for the build's RUN steps (the host's TLS-intercepting egress
  # proxy re-signs PyPI); it does not end up in the image.
  podman build --network host --layers \
    -v "$CA:$CA:ro" \
    --build-arg "BASE=$BASE_IMAGE" \
    --build-arg "VERSION=$version" "${source_args[@]}" \
    --target "$target" -t "$image" \
    -f "$ROOT/Dockerfile" "$ROOT" >"$STATE/build-$target.log" 2>&1 ||
    { tail -n 40 "$STATE/build-$target.log" >&2; die "podman build --target $target failed"; }
  log "built $image in $((SECONDS - t0)) s"
  # The image this build replaced holds a full copy of the venv (100-200 MB) that no cache step
  # needs; drop it unless a container still uses it.
  if [[ -n $previous && $previous != $(podman image inspect --format '{{.Id}}' "$image") ]]; then
    podman rmi "$previous" >/dev/null 2>&1 || true
  fi
}

print_sizes() {
  local img
  for img in "$BASE_IMAGE" $(for t in $TARGETS; do echo "localhost/kuberunner-$t:$TAG"; done); do
    image_exists "$img" || continue
    podman image inspect --format "{{.Size}}" "$img" |
      awk -v n="$img" '{printf "build-images: %-40s %6.1f MB\n", n, $1 / 1e6}' >&2
  done
}

install_tools
write_config
make_base
[[ ${1:-} == --base-only ]] && exit 0
for target in $TARGETS; do build_target "$target"; done
print_sizes

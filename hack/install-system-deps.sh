#!/usr/bin/env bash
# Installs the Debian packages that the tests and benchmarks use, when missing.
# The dev cluster's real node needs runc (containerd's runtime), iproute2 (its bridge), nftables
# (kube-proxy's nftables mode and our guard table), conntrack (kube-proxy flushes UDP entries),
# mount (util-linux: teardown unmounts) and openssl (the cluster's certificates).
set -euo pipefail
want=(podman buildah debootstrap runc uidmap prometheus wrk curl iproute2 nftables conntrack mount openssl)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0
echo "install-system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

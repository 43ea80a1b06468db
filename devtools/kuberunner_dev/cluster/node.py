"""The real node of a dev cluster: its addresses, directories, configuration files and command
lines. Pure functions (paths, ports and addresses in; file contents and argv out); `realnode`
runs them.

One real node per machine: its bridge name, pod subnet and kube-proxy's nftables table are
machine-wide names, so a second cluster with a real node is refused (see `realnode`).

Addresses. The pod subnet lives only on the bridge `kr0`, which the cluster creates and whose
address is the node IP (the kubelet refuses a loopback node IP). Every listener of the node's
processes is on 127.0.0.1 or that address; CNI does not masquerade (`ipMasq: false`) and a
guard table drops forwarding between the bridge and any other interface, so pod traffic never
leaves the machine. CoreDNS runs as a host process on the bridge address, port 53, and is the
pods' `clusterDNS` (a host process needs no Service, and pods reach the bridge address
directly). kube-proxy (nftables mode) makes ClusterIP Services work from pods and the host.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kuberunner_dev.cluster.binaries import Binaries

NODE_NAME = "real-node"
BRIDGE = "kr0"
POD_SUBNET = ipaddress.IPv4Network("10.245.0.0/24")
NODE_IP = str(next(POD_SUBNET.hosts()))  # 10.245.0.1, the bridge's address
CLUSTER_DOMAIN = "cluster.local"
# The first address of the Service range (components.SERVICE_CIDR): the `kubernetes` Service.
KUBERNETES_SERVICE_IP = "10.96.0.1"
# Our guard table (netsetup) and the table kube-proxy's nftables mode creates.
GUARD_TABLE = ("inet", "kuberunner")
KUBE_PROXY_TABLES = (("ip", "kube-proxy"), ("ip6", "kube-proxy"))
NODE_LABEL = ("kuberunner.io/real-node", "true")
CNI_NETWORK = "kuberunner"

# Start order; teardown stops the kubelet first and containerd last (see realnode.teardown).
NODE_COMPONENTS = ("containerd", "kubelet", "kube-proxy", "coredns")
NODE_PORT_NAMES = (
    "containerd-metrics",
    "kubelet",
    "kubelet-healthz",
    "kube-proxy-healthz",
    "kube-proxy-metrics",
    "coredns-health",
    "coredns-ready",
)


@dataclass(frozen=True)
class NodeLayout:
    """Where the real node keeps its files: under the cluster's state dir, except the sockets.

    Unix socket paths are limited to 107 bytes and the shims' sockets add a 64-character hash,
    so containerd's sockets live in a short per-cluster directory under /run instead."""

    state_dir: Path
    cluster_name: str

    @property
    def root(self) -> Path:
        return self.state_dir / "node"

    @property
    def run_dir(self) -> Path:
        digest = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:10]
        return Path("/run") / f"kuberunner-{digest}"

    @property
    def containerd_socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    # What the host looked like before `up` (teardown restores it) is kept in the /run dir, not
    # the state dir: it describes the host, so it must outlive a state dir deleted under a
    # dead node (pytest's temp retention) and go with a reboot, which resets the host anyway.
    @property
    def sysctls_record(self) -> Path:
        return self.run_dir / "sysctls.json"

    @property
    def tables_record(self) -> Path:
        return self.run_dir / "nft-tables.json"

    @property
    def host_dirs_record(self) -> Path:
        return self.run_dir / "host-dirs.json"

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd.toml"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet.yaml"

    @property
    def kube_proxy_config(self) -> Path:
        return self.root / "kube-proxy.yaml"

    @property
    def corefile(self) -> Path:
        return self.root / "Corefile"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "resolv.conf"

    @property
    def cni_bin(self) -> Path:
        return self.root / "cni" / "bin"

    @property
    def cni_conf(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    def kubeconfig(self, component: str) -> Path:
        return self.root / f"{component}.kubeconfig"

    @property
    def cgroup_root(self) -> str:
        """The cgroup (in every hierarchy) that holds all pods of this node."""
        return f"/kuberunner-{self.run_dir.name.removeprefix('kuberunner-')}"


def health_url(component: str, ports: dict[str, int]) -> str:
    return {
        "containerd": f"http://127.0.0.1:{ports['containerd-metrics']}/v1/metrics",
        "kubelet": f"http://127.0.0.1:{ports['kubelet-healthz']}/healthz",
        "kube-proxy": f"http://127.0.0.1:{ports['kube-proxy-healthz']}/healthz",
        "coredns": f"http://127.0.0.1:{ports['coredns-ready']}/ready",
    }[component]


def _toml_str(value: str | Path) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def containerd_config(
    layout: NodeLayout, ports: dict[str, int], sandbox_image: str, shim: Path
) -> str:
    """containerd's config (version 4, the format this containerd writes by default)."""
    run = layout.run_dir
    cd = layout.root / "containerd"
    runtime = "plugins.'io.containerd.cri.v1.runtime'"
    return f"""version = 4
root = {_toml_str(cd / "root")}
state = {_toml_str(cd / "state")}
# Nothing from /etc/containerd: this containerd is configured by this file alone.
imports = []
# NRI would listen on /var/run/nri; nothing here uses it.
disabled_plugins = ["io.containerd.nri.v1.nri"]

[plugins.'io.containerd.server.v1.grpc']
  address = {_toml_str(run / "containerd.sock")}
[plugins.'io.containerd.server.v1.ttrpc']
  address = {_toml_str(run / "containerd.sock.ttrpc")}
[plugins.'io.containerd.server.v1.metrics']
  address = "127.0.0.1:{ports["containerd-metrics"]}"
[plugins.'io.containerd.shim.v1.manager']
  socket_dir = {_toml_str(run / "s")}
[plugins.'io.containerd.internal.v1.opt']
  path = {_toml_str(cd / "opt")}
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    # A local image (imported before the first pod): there is no registry to pull from.
    sandbox = {_toml_str(sandbox_image)}

[{runtime}]
  # The host withholds CAP_SYS_RESOURCE: a sandbox's negative oom_score_adj would make runc
  # fail with "can't get final child's PID from pipe: EOF"; never go below our own score.
  restrict_oom_score_adj = true
  # Pods' network namespaces under containerd's state dir, not /var/run/netns.
  netns_mounts_under_state_dir = true
  cdi_spec_dirs = []
  [{runtime}.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    # Our shim binary by path: containerd would otherwise look for it on $PATH.
    runtime_path = {_toml_str(shim)}
    [{runtime}.containerd.runtimes.runc.options]
      BinaryName = "/usr/sbin/runc"
      Root = {_toml_str(run / "runc")}
      SystemdCgroup = false
  [{runtime}.cni]
    bin_dirs = [{_toml_str(layout.cni_bin)}]
    conf_dir = {_toml_str(layout.cni_conf)}
"""


def cni_conflist(layout: NodeLayout) -> dict[str, Any]:
    """One bridge network on `kr0`; host-local IPAM keeps its leases under the node's dir."""
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                # Pods talk to the host and each other only: no NAT towards the uplink.
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(POD_SUBNET), "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.root / "cni" / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(
    layout: NodeLayout, ports: dict[str, int], ca_cert: Path, serving: tuple[Path, Path]
) -> dict[str, Any]:
    cert, key = serving
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": ports["kubelet"],
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports["kubelet-healthz"],
        "tlsCertFile": str(cert),
        "tlsPrivateKeyFile": str(key),
        # Only callers with a cluster-CA client cert or a token the apiserver accepts, and
        # only what the apiserver authorizes (SubjectAccessReview): `kubectl logs/exec` work.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        # This host mounts cgroup v1 (hybrid layout) and has no systemd. kubelet 1.35+ refuses
        # to start on cgroup v1 unless told otherwise; v1 is deprecated, not broken, and a dev
        # node on such a host is better than none. `status` reports the mode.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        # Every pod cgroup under one cgroup of ours, so `down` can find and remove them all.
        "cgroupRoot": layout.cgroup_root,
        "clusterDNS": [NODE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        # Pods must not inherit the host's search domains and resolvers.
        "resolvConf": str(layout.resolv_conf),
        "podLogsDir": str(layout.pod_logs),
        "failSwapOn": False,
        # No KUBE-FIREWALL / canary chains in the host's iptables: kube-proxy's nftables
        # mode needs none of them.
        "makeIPTablesUtilChains": False,
        "registerNode": True,
        "maxPods": 110,
        # A shared dev machine: never evict or garbage-collect images over disk usage.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "0%",
            "imagefs.available": "0%",
            "nodefs.inodesFree": "0%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "nodeStatusReportFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
    }


def kube_proxy_config(layout: NodeLayout, ports: dict[str, int]) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(layout.kubeconfig("kube-proxy"))},
        "mode": "nftables",
        "hostnameOverride": NODE_NAME,
        "bindAddress": NODE_IP,
        "healthzBindAddress": f"127.0.0.1:{ports['kube-proxy-healthz']}",
        "metricsBindAddress": f"127.0.0.1:{ports['kube-proxy-metrics']}",
        "clusterCIDR": str(POD_SUBNET),
        # NodePorts answer on the bridge address only.
        "nodePortAddresses": [f"{NODE_IP}/32"],
        # Leave the host's conntrack sysctls alone (0 = do not set).
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        # A pod reaching a Service backed by a pod on the same bridge gets its reply through
        # the host, whatever the host's bridge-netfilter setting (source NAT to the bridge
        # address, never to the uplink: this traffic never leaves kr0).
        "nftables": {"masqueradeAll": True},
    }


def corefile(ports: dict[str, int], kubeconfig: Path, context: str) -> str:
    """CoreDNS answers cluster names from the API; anything else is refused (no forwarding)."""
    return f""". {{
    bind {NODE_IP}
    errors
    health 127.0.0.1:{ports["coredns-health"]}
    ready 127.0.0.1:{ports["coredns-ready"]}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} {context}
        pods insecure
        ttl 5
    }}
    cache 5
    loadbalance
}}
"""


def resolv_conf() -> str:
    """The kubelet adds the cluster nameserver and search path; the host adds nothing."""
    return "options ndots:5\n"


def render_yaml(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False)


def command(component: str, bins: Binaries, layout: NodeLayout) -> list[str]:
    if component == "containerd":
        return [str(bins["containerd"]), f"--config={layout.containerd_config}"]
    if component == "kubelet":
        return [
            str(bins["kubelet"]),
            f"--config={layout.kubelet_config}",
            f"--kubeconfig={layout.kubeconfig('kubelet')}",
            f"--root-dir={layout.kubelet_root}",
            f"--cert-dir={layout.kubelet_root / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            f"--node-labels={NODE_LABEL[0]}={NODE_LABEL[1]}",
        ]
    if component == "kube-proxy":
        return [str(bins["kube-proxy"]), f"--config={layout.kube_proxy_config}"]
    if component == "coredns":
        return [str(bins["coredns"]), "-conf", str(layout.corefile)]
    raise ValueError(f"unknown node component {component!r}")

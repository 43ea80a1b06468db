"""Command lines of the control-plane components. Pure functions: paths and ports in, argv out."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kuberunner_dev.cluster.binaries import Binaries
from kuberunner_dev.cluster.node import NODE_PORT_NAMES
from kuberunner_dev.cluster.node import health_url as node_health_url
from kuberunner_dev.cluster.nodes import KWOK_ANNOTATION
from kuberunner_dev.cluster.pki import NodePki, Pki

SERVICE_CIDR = "10.96.0.0/16"
# "1" starts the API server with /debug/pprof on, for profiling it under a benchmark.
APISERVER_PROFILING_ENV = "KUBERUNNER_DEV_APISERVER_PROFILING"
POD_CIDR = "10.244.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc"
NODE_LEASE_SECONDS = 40

# Start order; `down` stops them all at once, `status` reports them in this order.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
PORT_NAMES = (
    "etcd",
    "etcd-peer",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
)


@dataclass(frozen=True)
class Layout:
    """Where a cluster keeps its files."""

    state_dir: Path

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "admin.kubeconfig"

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def etcd_data(self) -> Path:
        return self.state_dir / "etcd-data"

    @property
    def stages(self) -> Path:
        return self.state_dir / "kwok-stages.yaml"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "cluster.json"

    def log(self, component: str) -> Path:
        return self.state_dir / "logs" / f"{component}.log"


def port_names(real_node: bool) -> tuple[str, ...]:
    return PORT_NAMES + NODE_PORT_NAMES if real_node else PORT_NAMES


def health_url(component: str, ports: dict[str, int]) -> str:
    """The URL whose 200 answer means `component` is healthy."""
    if component not in COMPONENTS:
        return node_health_url(component, ports)
    port = ports[component]
    return {
        "etcd": f"http://127.0.0.1:{port}/health",
        "kube-apiserver": f"https://127.0.0.1:{port}/readyz",
        "kube-controller-manager": f"https://127.0.0.1:{port}/healthz",
        "kube-scheduler": f"https://127.0.0.1:{port}/healthz",
        "kwok": f"http://127.0.0.1:{port}/healthz",
    }[component]


def _kubelet_access(pki: Pki, node_pki: NodePki | None) -> list[str]:
    """apiserver flags for a real node: client certificates (the kubelet's) are accepted, the
    Node authorizer limits each kubelet to its own node, and the apiserver reaches kubelets
    (logs, exec) at their InternalIP (the bridge address; their names resolve nowhere) with
    its own client certificate, verifying theirs against the cluster CA."""
    if node_pki is None:
        return ["--authorization-mode=RBAC"]
    return [
        "--authorization-mode=Node,RBAC",
        f"--client-ca-file={pki.ca_cert}",
        "--kubelet-preferred-address-types=InternalIP",
        f"--kubelet-client-certificate={node_pki.apiserver_kubelet_cert}",
        f"--kubelet-client-key={node_pki.apiserver_kubelet_key}",
        f"--kubelet-certificate-authority={pki.ca_cert}",
    ]


def command(
    component: str,
    bins: Binaries,
    layout: Layout,
    pki: Pki,
    ports: dict[str, int],
    node_pki: NodePki | None = None,
) -> list[str]:
    """The argv that starts `component`, bound to 127.0.0.1 on its port."""
    kubeconfig = str(layout.kubeconfig)
    if component == "etcd":
        client = f"http://127.0.0.1:{ports['etcd']}"
        peer = f"http://127.0.0.1:{ports['etcd-peer']}"
        return [
            str(bins["etcd"]),
            "--name=default",
            f"--data-dir={layout.etcd_data}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            # A throwaway dev store: durability across power loss is not worth the fsync cost.
            "--unsafe-no-fsync",
        ]
    if component == "kube-apiserver":
        return [
            str(bins["kube-apiserver"]),
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-apiserver']}",
            # Loopback advertise address is rejected by the Endpoints reconciler; turn it off.
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--token-auth-file={pki.token_file}",
            *_kubelet_access(pki, node_pki),
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            # /debug/pprof stays off unless a benchmark asks for it (bench/operator_bench.py).
            f"--profiling={'true' if os.environ.get(APISERVER_PROFILING_ENV) == '1' else 'false'}",
        ]
    if component == "kube-controller-manager":
        return [
            str(bins["kube-controller-manager"]),
            f"--kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-controller-manager']}",
            "--leader-elect=false",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}",
            "--profiling=false",
        ]
    if component == "kube-scheduler":
        return [
            str(bins["kube-scheduler"]),
            f"--kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-scheduler']}",
            "--leader-elect=false",
            "--profiling=false",
        ]
    if component == "kwok":
        return [
            str(bins["kwok"]),
            f"--kubeconfig={kubeconfig}",
            f"--config={layout.stages}",
            f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION[0]}={KWOK_ANNOTATION[1]}",
            f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
            f"--cidr={POD_CIDR}",
            # Only for /healthz; kwok serves nothing else without port-forward/exec configs.
            f"--server-address=127.0.0.1:{ports['kwok']}",
        ]
    raise ValueError(f"unknown component {component!r}")

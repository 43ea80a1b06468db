"""Bring the real node's host pieces up and take them all down again.

`prepare` writes the node's files and creates the bridge, guard table and cgroup root before
any node process starts; `teardown` stops the node's processes in the order containerd needs
(kubelet, pod processes, shims, then containerd) and removes everything `prepare` and the
processes created: mounts, the bridge, nftables tables, cgroups, sysctl changes, /run dir.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from kuberunner_dev.cluster import hostres, netsetup, processes
from kuberunner_dev.cluster.binaries import Binaries
from kuberunner_dev.cluster.kubeconfig import render_kubeconfig, write_kubeconfig
from kuberunner_dev.cluster.node import (
    BRIDGE,
    CNI_NETWORK,
    NODE_NAME,
    NodeLayout,
    cni_conflist,
    containerd_config,
    corefile,
    kube_proxy_config,
    kubelet_config,
    render_yaml,
    resolv_conf,
)
from kuberunner_dev.cluster.pki import COREDNS_USER, NodePki, Pki
from kuberunner_dev.cluster.state import ClusterError, ComponentRecord

CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")


OWNER_FILE = "owner"  # in the node's /run dir: the state dir of the cluster it belongs to


def owner_state_dir() -> Path | None:
    """The state dir of the cluster whose real node holds this machine, if a /run dir says."""
    for run_dir in Path("/run").glob("kuberunner-*"):
        try:
            return Path((run_dir / OWNER_FILE).read_text().strip())
        except OSError:
            continue
    return None


def _owner_hint() -> str:
    """How to take down the cluster whose node holds the bridge."""
    state_dir = owner_state_dir()
    if state_dir is None:
        return " Stop that cluster with `kuberunner dev cluster down --name NAME`."
    return (
        f" It belongs to the cluster in {state_dir}: stop it with `KUBERUNNER_CLUSTERS_DIR="
        f"{state_dir.parent} kuberunner dev cluster down --name {state_dir.name}`."
    )


def ensure_free() -> None:
    if os.geteuid() != 0:
        raise ClusterError(
            "the real node needs root (it creates a bridge, mounts and cgroups); run as root "
            "or start the cluster with --no-real-node"
        )
    if netsetup.bridge_exists():
        raise ClusterError(
            f"the bridge {BRIDGE} exists: another dev cluster's real node runs on this machine "
            f"(one per machine).{_owner_hint()} Or start this cluster with --no-real-node."
        )


def write_files(
    layout: NodeLayout,
    bins: Binaries,
    server: str,
    pki: Pki,
    node_pki: NodePki,
    ports: dict[str, int],
) -> None:
    """Configuration, kubeconfigs and the CNI plugin directory of the node."""
    layout.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    layout.cni_bin.mkdir(parents=True, exist_ok=True)
    layout.cni_conf.mkdir(parents=True, exist_ok=True)
    for plugin in CNI_PLUGINS:
        (layout.cni_bin / plugin).symlink_to(bins[f"cni-{plugin}"])
    (layout.cni_conf / "10-kuberunner.conflist").write_text(
        json.dumps(cni_conflist(layout), indent=2)
    )
    layout.containerd_config.write_text(
        containerd_config(layout, ports, bins.pause_image_name, bins["containerd-shim-runc-v2"])
    )
    serving = (node_pki.kubelet_serving_cert, node_pki.kubelet_serving_key)
    layout.kubelet_config.write_text(
        render_yaml(kubelet_config(layout, ports, pki.ca_cert, serving))
    )
    layout.kube_proxy_config.write_text(render_yaml(kube_proxy_config(layout, ports)))
    name = layout.cluster_name
    layout.corefile.write_text(corefile(ports, layout.kubeconfig("coredns"), name))
    layout.resolv_conf.write_text(resolv_conf())
    ca = pki.ca_cert.read_bytes()
    kubeconfigs = {
        "kubelet": render_kubeconfig(
            name,
            server,
            ca,
            client_cert=node_pki.kubelet_client_cert,
            client_key=node_pki.kubelet_client_key,
            user=f"system:node:{NODE_NAME}",
        ),
        "kube-proxy": render_kubeconfig(
            name, server, ca, node_pki.kube_proxy_token, user="kube-proxy"
        ),
        "coredns": render_kubeconfig(name, server, ca, node_pki.coredns_token, user="coredns"),
    }
    for component, text in kubeconfigs.items():
        write_kubeconfig(layout.kubeconfig(component), text)


def prepare_host(layout: NodeLayout, apiserver_port: int) -> None:
    """Sysctl snapshot first (teardown restores it), then bridge, guard table, cgroup root."""
    layout.run_dir.mkdir(mode=0o700, exist_ok=True)
    (layout.run_dir / OWNER_FILE).write_text(f"{layout.state_dir.resolve()}\n")
    netsetup.save_sysctls(layout.sysctls_record)
    netsetup.save_tables(layout.tables_record)
    hostres.save_host_dirs(layout.host_dirs_record)
    netsetup.create_bridge()
    netsetup.add_guard(apiserver_port)
    hostres.create_cgroup_root(layout.cgroup_root)


def ctr(bins: Binaries, layout: NodeLayout, *args: str) -> str:
    done = subprocess.run(
        [str(bins["ctr"]), f"--address={layout.containerd_socket}", "--namespace=k8s.io", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ClusterError(f"ctr {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def import_archive(bins: Binaries, layout: NodeLayout, archive: Path) -> None:
    """Import an OCI or docker archive into the CRI's image namespace (k8s.io)."""
    ctr(bins, layout, "images", "import", "--platform=linux/amd64", str(archive))


COREDNS_RBAC: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": COREDNS_USER},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["services", "endpoints", "namespaces", "pods"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
    ),
    (
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": COREDNS_USER},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": COREDNS_USER,
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": COREDNS_USER}
            ],
        },
    ),
)


def grant_coredns(client: httpx.Client) -> None:
    for path, body in COREDNS_RBAC:
        resp = client.post(path, json=body)
        if resp.status_code not in (201, 409):
            raise ClusterError(f"creating {body['kind']} {COREDNS_USER}: {resp.text}")


def node_registered(client: httpx.Client) -> bool:
    return client.get(f"/api/v1/nodes/{NODE_NAME}").status_code == 200


def advertise_gpus(client: httpx.Client, count: int) -> None:
    """An extended resource on the node's capacity (the kubelet keeps it and derives
    allocatable), so GPU-shaped pods can run here without a GPU."""
    resp = client.patch(
        f"/api/v1/nodes/{NODE_NAME}/status",
        json=[{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": str(count)}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    if resp.status_code != 200:
        raise ClusterError(f"advertising nvidia.com/gpu on {NODE_NAME}: {resp.text}")


def _stop(components: Sequence[ComponentRecord], name: str) -> None:
    processes.stop([c.process for c in components if c.name == name])


def teardown(layout: NodeLayout, components: Sequence[ComponentRecord]) -> None:
    """Stop the node's processes and remove every trace of the node from the host.

    Every step runs even when an earlier one failed (a half-done teardown would leave the
    bridge behind and block the next real node); the failures are raised together at the end.
    """
    failures: list[str] = []

    def step(what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except Exception as exc:  # keep going: the remaining steps still free the host
            failures.append(f"{what}: {type(exc).__name__}: {exc}")

    # The kubelet first, so it does not restart what we kill next.
    step("stop kubelet", lambda: _stop(components, "kubelet"))
    step("kill pod processes", lambda: hostres.kill_cgroup(layout.cgroup_root))
    # Each shim serves one pod; it is ours if its -address is our containerd's socket.
    step(
        "stop shims",
        lambda: processes.stop(
            hostres.processes_with_arg(str(layout.containerd_socket)), grace=5.0
        ),
    )
    for name in ("kube-proxy", "coredns", "containerd"):
        step(f"stop {name}", lambda name=name: _stop(components, name))  # type: ignore[misc]
    step("unmount", lambda: hostres.unmount_under(layout.root, layout.run_dir))
    step(
        "clean host dirs",
        lambda: hostres.clean_host_dirs(layout.host_dirs_record, layout.pod_logs, CNI_NETWORK),
    )
    step("remove bridge", netsetup.remove_bridge)
    step("remove nft tables", netsetup.remove_tables)
    step("remove kubelet chains", netsetup.remove_kubelet_chains)
    step(
        "remove new empty tables",
        lambda: netsetup.remove_new_empty_tables(layout.tables_record),
    )
    step("remove cgroups", lambda: hostres.remove_cgroup_root(layout.cgroup_root))
    step("restore sysctls", lambda: netsetup.restore_sysctls(layout.sysctls_record))
    shutil.rmtree(layout.run_dir, ignore_errors=True)
    if failures:
        raise ClusterError("real node teardown incomplete: " + "; ".join(failures))

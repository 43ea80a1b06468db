"""The real node's configuration, rendered by pure functions: the promises that keep it on this
machine (listeners, no masquerade, no DNS forwarding) and the host quirks it works around."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

from kuberunner_dev.cluster.binaries import parse_print_output
from kuberunner_dev.cluster.netsetup import guard_rules
from kuberunner_dev.cluster.node import (
    BRIDGE,
    NODE_IP,
    NODE_PORT_NAMES,
    POD_SUBNET,
    NodeLayout,
    cni_conflist,
    containerd_config,
    corefile,
    kube_proxy_config,
    kubelet_config,
)
from kuberunner_dev.cluster.nodes import GPU_TAINT, SIMULATED_TAINT, NodeShape, node_manifests

REPO = Path(__file__).resolve().parents[3]
PORTS = {name: 40000 + i for i, name in enumerate(NODE_PORT_NAMES)}
LAYOUT = NodeLayout(Path("/tmp/clusters/demo"), "demo")


def test_containerd_config_keeps_state_in_our_dirs_and_restricts_oom_score() -> None:
    config = tomllib.loads(
        containerd_config(LAYOUT, PORTS, "localhost/kuberunner-pause:1.0", Path("/bin/shim"))
    )
    assert config["version"] == 4
    assert config["root"].startswith(str(LAYOUT.root))
    assert config["state"].startswith(str(LAYOUT.root))
    plugins = config["plugins"]
    assert plugins["io.containerd.server.v1.metrics"]["address"].startswith("127.0.0.1:")
    assert plugins["io.containerd.grpc.v1.cri"]["stream_server_address"] == "127.0.0.1"
    runtime = plugins["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["netns_mounts_under_state_dir"] is True
    assert runtime["containerd"]["runtimes"]["runc"]["runtime_path"] == "/bin/shim"
    images = plugins["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == "localhost/kuberunner-pause:1.0"
    # Unix socket paths must stay under 108 bytes, with the shims' 64-character names.
    assert len(str(LAYOUT.run_dir / "s" / ("x" * 64))) < 108


def test_cni_bridge_never_masquerades() -> None:
    bridge = cni_conflist(LAYOUT)["plugins"][0]
    assert (bridge["type"], bridge["bridge"], bridge["ipMasq"]) == ("bridge", BRIDGE, False)
    assert bridge["ipam"]["ranges"] == [[{"subnet": str(POD_SUBNET), "gateway": NODE_IP}]]
    assert bridge["ipam"]["dataDir"].startswith(str(LAYOUT.root))


def test_kubelet_binds_the_bridge_and_runs_on_cgroup_v1() -> None:
    config = kubelet_config(LAYOUT, PORTS, Path("/ca.crt"), (Path("/c"), Path("/k")))
    assert config["address"] == NODE_IP
    assert config["healthzBindAddress"] == "127.0.0.1"
    assert config["readOnlyPort"] == 0
    assert config["failCgroupV1"] is False
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["clusterDNS"] == [NODE_IP]
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authorization"]["mode"] == "Webhook"
    assert config["makeIPTablesUtilChains"] is False
    for key in ("resolvConf", "podLogsDir"):
        assert config[key].startswith(str(LAYOUT.root))


def test_kube_proxy_listens_locally_and_leaves_conntrack_alone() -> None:
    config = kube_proxy_config(LAYOUT, PORTS)
    assert config["mode"] == "nftables"
    assert config["healthzBindAddress"].startswith("127.0.0.1:")
    assert config["metricsBindAddress"].startswith("127.0.0.1:")
    assert config["nodePortAddresses"] == [f"{NODE_IP}/32"]
    assert config["conntrack"]["maxPerCore"] == 0


def test_coredns_serves_the_cluster_zone_only() -> None:
    text = corefile(PORTS, Path("/k"), "demo")
    assert f"bind {NODE_IP}" in text
    assert "forward" not in text
    assert "kubernetes cluster.local" in text


def test_guard_drops_forwarding_between_the_bridge_and_other_interfaces() -> None:
    rules = guard_rules(6443)
    assert f'iifname "{BRIDGE}" oifname != "{BRIDGE}" drop' in rules
    assert f'oifname "{BRIDGE}" iifname != "{BRIDGE}" drop' in rules
    assert "dnat ip to 127.0.0.1:6443" in rules


@pytest.mark.parametrize("real_node", [False, True])
def test_kwok_cpu_nodes_are_tainted_only_beside_a_real_node(real_node: bool) -> None:
    nodes = node_manifests(NodeShape(cpu_nodes=1, gpu_nodes=1, real_node=real_node))
    taints = {n["metadata"]["name"]: n["spec"].get("taints", []) for n in nodes}
    assert taints["kwok-cpu-0"] == ([SIMULATED_TAINT] if real_node else [])
    assert taints["kwok-gpu-0"] == [GPU_TAINT]


def test_print_output_names_the_pause_image() -> None:
    text = "kubelet=/b/kubelet\npause-image=/b/p.tar\npause-image-name=localhost/p:1\n"
    text += "kwok-module=/m\nk8s-version=v1.36.2\n"
    bins = parse_print_output(text)
    assert bins.pause_image_name == "localhost/p:1"
    assert bins["pause-image"] == Path("/b/p.tar")
    assert "pause-image-name" not in bins.paths


def test_pause_oci_archive_is_a_valid_layout(tmp_path: Path) -> None:
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF fake")
    out = tmp_path / "pause.tar"
    script = REPO / "hack" / "pause" / "oci_archive.py"
    subprocess.run(
        [sys.executable, str(script), str(binary), "localhost/p:1", str(out)], check=True
    )
    with tarfile.open(out) as tar:
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        [entry] = index["manifests"]
        assert entry["annotations"]["io.containerd.image.name"] == "localhost/p:1"
        manifest_name = "blobs/sha256/" + entry["digest"].removeprefix("sha256:")
        manifest = json.loads(tar.extractfile(manifest_name).read())  # type: ignore[union-attr]
        names = set(tar.getnames())
        for blob in [manifest["config"], *manifest["layers"]]:
            assert "blobs/sha256/" + blob["digest"].removeprefix("sha256:") in names

"""The dev cluster's real node: pods really run (containerd, runc, CNI bridge), probes, logs,
exec, ClusterIP Services, cluster DNS, and `down` leaves nothing behind on the host.

One cluster with a real node for the whole module (only one may run per machine). The last
test takes it down and checks the host; the fixture's own `down` is then a no-op.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from k8s_helpers import REPO, apply, kubectl, kubectl_json, wait_for
from kuberunner_dev.cluster import ClusterInfo, down, status, up
from kuberunner_dev.cluster.binaries import NODE, locate
from kuberunner_dev.cluster.components import Layout
from kuberunner_dev.cluster.hostres import (
    CNI_RESULTS,
    HOST_DIRS,
    cgroup_dirs,
    mounts_under,
    processes_with_arg,
)
from kuberunner_dev.cluster.netsetup import TOUCHED_SYSCTLS, our_tables
from kuberunner_dev.cluster.node import BRIDGE, NODE_IP, NODE_NAME, POD_SUBNET, NodeLayout
from kuberunner_dev.cluster.processes import ProcessRef, is_alive

pytestmark = pytest.mark.cluster

RUNNER_IMAGE = "localhost/kuberunner-runner:dev"
NODE_GPUS = 2


@dataclass(frozen=True)
class RealCluster:
    info: ClusterInfo
    clusters_dir: Path
    sysctls_before: dict[str, str]
    host_dirs_before: list[Path]


def sysctls() -> dict[str, str]:
    return {k: Path("/proc/sys", k.replace(".", "/")).read_text().strip() for k in TOUCHED_SYSCTLS}


def ensure_runner_image() -> None:
    """hack/build-images.sh is cached: seconds when the image exists, minutes when cold."""
    env = {**os.environ, "KUBERUNNER_TARGETS": "runner"}
    subprocess.run(["bash", str(REPO / "hack" / "build-images.sh")], env=env, check=True)


def cli(clusters_dir: Path, *args: str) -> str:
    """`kuberunner dev cluster ARGS` against clusters in `clusters_dir`; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "kuberunner", "dev", "cluster", *args],
        env={**os.environ, "KUBERUNNER_CLUSTERS_DIR": str(clusters_dir)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    if os.geteuid() != 0:
        pytest.fail("the real node needs root (bridge, mounts, cgroups): run the tests as root")
    ensure_runner_image()
    clusters_dir = tmp_path_factory.mktemp("real")
    name = f"pytest-node-{os.getpid()}"
    before = sysctls()
    dirs_before = [d for d in HOST_DIRS if d.exists()]
    try:
        info = up(
            name,
            cpu_nodes=1,
            gpu_nodes=1,
            real_node=True,
            node_gpus=NODE_GPUS,
            clusters_dir=clusters_dir,
            die_with_parent=True,
            timeout=180,
        )
        # Through the CLI, which calls load_images.
        cli(clusters_dir, "load-image", "--name", name, RUNNER_IMAGE)
        yield RealCluster(info, clusters_dir, before, dirs_before)
    finally:
        down(name, clusters_dir=clusters_dir)


@pytest.fixture
def ns(real: RealCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:30].strip("-")
    name = f"{base}-{os.getpid() % 100000}"
    kubectl(real.info, "create", "namespace", name)
    try:
        yield name
    finally:
        # Wait: the pods' containers, sandboxes and IPs must be gone before the next test.
        kubectl(real.info, "delete", "namespace", name, "--timeout=120s", check=False)


def ready(obj: dict[str, Any]) -> bool:
    conds = obj.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def web_pod(name: str) -> dict[str, Any]:
    """python3's http.server on 8080; ready once /srv/ready exists (made with kubectl exec)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "web",
                    "image": RUNNER_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": [
                        "sh",
                        "-c",
                        "mkdir -p /tmp/srv && exec python3 -m http.server "
                        "8080 --directory /tmp/srv",
                    ],
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {
                        "httpGet": {"path": "/ready", "port": 8080},
                        "periodSeconds": 1,
                        "failureThreshold": 1,
                    },
                }
            ],
        },
    }


def client_pod(name: str, url: str) -> dict[str, Any]:
    """A pod that fetches `url` once and prints the answer."""
    script = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).status)"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "client",
                    "image": RUNNER_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", script],
                }
            ],
        },
    }


def get(real: RealCluster, kind: str, name: str, ns: str) -> dict[str, Any]:
    obj: dict[str, Any] = kubectl_json(real.info, "get", kind, name, "-n", ns)
    return obj


def finished_phase(real: RealCluster, name: str, ns: str) -> str | None:
    phase = get(real, "pod", name, ns)["status"].get("phase")
    return str(phase) if phase in ("Succeeded", "Failed") else None


def wait_running(real: RealCluster, name: str, ns: str) -> None:
    wait_for(
        lambda: get(real, "pod", name, ns)["status"].get("phase") == "Running",
        timeout=60,
        message=f"pod {name} Running",
    )


def test_real_node_is_ready_beside_the_kwok_nodes(real: RealCluster) -> None:
    nodes = {n["metadata"]["name"]: n for n in kubectl_json(real.info, "get", "nodes")["items"]}
    assert set(nodes) == {NODE_NAME, "kwok-cpu-0", "kwok-gpu-0"}
    node = nodes[NODE_NAME]
    assert ready(node)
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.36.2"
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert {"type": "InternalIP", "address": NODE_IP} in node["status"]["addresses"]
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == str(NODE_GPUS)
    assert not node["spec"].get("taints")
    simulated = {"key": "kuberunner.io/simulated", "value": "true", "effect": "NoSchedule"}
    assert simulated in nodes["kwok-cpu-0"]["spec"]["taints"]
    st = status(real.info.name, real.clusters_dir)
    assert st.healthy, [(c.name, c.detail) for c in st.components if not c.healthy]
    names = {c.name for c in st.components}
    assert {"containerd", "kubelet", "kube-proxy", "coredns"} <= names
    assert st.cgroup_mode in ("v1", "v1 (hybrid)", "v2")
    shown = cli(real.clusters_dir, "status", "--name", real.info.name)
    assert f"cgroup mode: {st.cgroup_mode}" in shown
    for name in ("containerd", "kubelet", "kube-proxy", "coredns"):
        assert re.search(rf"^  {name} +healthy ", shown, re.M), shown


def test_node_processes_listen_on_loopback_or_the_bridge(real: RealCluster) -> None:
    st = status(real.info.name, real.clusters_dir)
    inodes: set[str] = set()
    for comp in st.components:
        for fd in Path(f"/proc/{comp.pid}/fd").iterdir():
            target = os.readlink(fd) if fd.is_symlink() else ""
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    bound: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            listening = fields[3] == "0A" or table.endswith(("udp", "udp6"))
            if listening and fields[9] in inodes:
                bound.add(fields[1].rsplit(":", 1)[0])
    bridge = "".join(f"{int(b):02X}" for b in reversed(NODE_IP.split(".")))
    assert bridge in bound  # kubelet and CoreDNS
    assert bound <= {"0100007F", bridge}, bound


def test_pod_is_ready_only_when_its_server_answers(real: RealCluster, ns: str) -> None:
    created = time.monotonic()
    apply(real.info, web_pod("web"), namespace=ns)
    wait_running(real, "web", ns)
    pod_ip = get(real, "pod", "web", ns)["status"]["podIP"]
    assert pod_ip in [str(ip) for ip in POD_SUBNET.hosts()]
    # The server answers (404 for /ready), so the probe fails and the pod stays unready.
    assert httpx.get(f"http://{pod_ip}:8080/ready", trust_env=False).status_code == 404
    time.sleep(3)
    assert not ready(get(real, "pod", "web", ns))
    kubectl(real.info, "exec", "-n", ns, "web", "--", "touch", "/tmp/srv/ready")
    wait_for(lambda: ready(get(real, "pod", "web", ns)), timeout=30, message="pod web Ready")
    print(f"pod create to Ready, including the exec: {time.monotonic() - created:.1f}s")
    logs = kubectl(real.info, "logs", "-n", ns, "web").stdout
    assert '"GET /ready HTTP/1.1" 404' in logs
    assert '"GET /ready HTTP/1.1" 200' in logs


def test_service_cluster_ip_and_dns_reach_the_pod(real: RealCluster, ns: str) -> None:
    apply(real.info, web_pod("web"), namespace=ns)
    wait_running(real, "web", ns)
    kubectl(real.info, "exec", "-n", ns, "web", "--", "touch", "/tmp/srv/ready")
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    apply(real.info, service, namespace=ns)
    wait_for(lambda: ready(get(real, "pod", "web", ns)), timeout=30, message="pod web Ready")
    cluster_ip = get(real, "service", "web", ns)["spec"]["clusterIP"]
    # From the host, through kube-proxy's rules.
    answer = wait_for(
        lambda: httpx.get(f"http://{cluster_ip}/ready", trust_env=False, timeout=2),
        timeout=30,
        message="ClusterIP from the host",
    )
    assert answer.status_code == 200
    # From other pods: by ClusterIP, and by name through CoreDNS.
    for name, url in (
        ("by-ip", f"http://{cluster_ip}/ready"),
        ("by-name", f"http://web.{ns}.svc/ready"),
    ):
        apply(real.info, client_pod(name, url), namespace=ns)
        phase = wait_for(
            functools.partial(finished_phase, real, name, ns),
            timeout=60,
            message=f"client pod {name} done",
        )
        logs = kubectl(real.info, "logs", "-n", ns, name).stdout
        assert phase == "Succeeded", logs
        assert logs.strip() == "200"


API_CLIENT = """
import ssl, urllib.error, urllib.request
d = "/var/run/secrets/kubernetes.io/serviceaccount/"
ctx = ssl.create_default_context(cafile=d + "ca.crt")
auth = {"Authorization": "Bearer " + open(d + "token").read()}
for path in ("/version", "/api/v1/namespaces/kube-system/secrets"):
    req = urllib.request.Request("https://kubernetes.default.svc" + path, headers=auth)
    try:
        print(urllib.request.urlopen(req, context=ctx, timeout=5).status)
    except urllib.error.HTTPError as exc:
        print(exc.code)
"""


def test_pods_reach_the_api_server_as_their_service_account(real: RealCluster, ns: str) -> None:
    pod = client_pod("api", "unused")
    pod["spec"]["containers"][0]["command"] = ["python3", "-c", API_CLIENT]
    apply(real.info, pod, namespace=ns)
    phase = wait_for(
        functools.partial(finished_phase, real, "api", ns), timeout=60, message="pod api done"
    )
    logs = kubectl(real.info, "logs", "-n", ns, "api").stdout
    assert phase == "Succeeded", logs
    # TLS verified against the cluster CA; authenticated, and RBAC still says no to secrets.
    assert logs.split() == ["200", "403"]


def test_gpu_shaped_pod_runs_on_the_real_node(real: RealCluster, ns: str) -> None:
    pod = web_pod("gpu")
    pod["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    apply(real.info, pod, namespace=ns)
    wait_running(real, "gpu", ns)
    assert get(real, "pod", "gpu", ns)["spec"]["nodeName"] == NODE_NAME


def test_down_leaves_nothing_behind(real: RealCluster) -> None:
    info = real.info
    layout = NodeLayout(info.state_dir, info.name)
    st = status(info.name, real.clusters_dir)
    refs = [ProcessRef(c.pid, _start_time(c.pid)) for c in st.components]
    refs += processes_with_arg(str(layout.containerd_socket))
    assert any(c.name == "containerd" for c in st.components)
    assert mounts_under(info.state_dir, layout.run_dir)  # pods ran, so there were some

    assert down(info.name, clusters_dir=real.clusters_dir)

    assert not [r.pid for r in refs if is_alive(r)]
    assert_host_clean(layout, info.state_dir, real)


def assert_host_clean(layout: NodeLayout, state_dir: Path, real: RealCluster) -> None:
    """No trace of the real node of `layout` on the host, and the host as `real` found it."""
    assert not processes_with_arg(str(layout.containerd_socket))
    assert not mounts_under(state_dir, layout.run_dir)
    assert not Path(f"/sys/class/net/{BRIDGE}").exists()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    assert BRIDGE not in links.stdout
    assert "veth" not in links.stdout
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert "cni-" not in netns.stdout
    assert not our_tables()
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False)
    assert not re.search(r"KUBE-|CNI-", rules.stdout), rules.stdout
    assert not [d for d in cgroup_dirs(layout.cgroup_root) if d.exists()]
    assert not layout.run_dir.exists()
    assert not state_dir.exists()
    assert sysctls() == real.sysctls_before
    # What the kubelet and libcni write outside their configured directories.
    assert [d for d in HOST_DIRS if d.exists()] == real.host_dirs_before
    assert not list(CNI_RESULTS.glob("kuberunner-*")) if CNI_RESULTS.is_dir() else True


@pytest.mark.parametrize("state_dir_lost", [False, True], ids=["state-kept", "state-deleted"])
def test_up_reclaims_a_real_node_whose_processes_all_died(
    real: RealCluster, state_dir_lost: bool
) -> None:
    """A killed session leaves the bridge, cgroups, /run dir and its pods' shims behind with
    every component dead: the next `up` removes them itself, also when the dead cluster's
    state dir was deleted meanwhile (pytest keeps only its last few temp dirs). A node with a
    live owner is refused instead."""
    dirs = real.clusters_dir
    down(real.info.name, clusters_dir=dirs)  # one real node per machine; usually already down
    abandoned = f"pytest-abandoned-{os.getpid()}"
    successor = f"pytest-successor-{os.getpid()}"
    try:
        abandoned_cluster = up(
            abandoned, cpu_nodes=0, gpu_nodes=0, real_node=True, clusters_dir=dirs, timeout=180
        )
        abandoned_info = status(abandoned, dirs)
        abandoned_layout = NodeLayout(abandoned_info.state_dir, abandoned)
        # A running pod: its shim and container outlive the components, as in a killed session.
        apply(abandoned_cluster, pause_pod("left-behind"), namespace="default")
        wait_for(
            lambda: (
                kubectl_json(abandoned_cluster, "get", "pod", "left-behind", "-n", "default")
                .get("status", {})
                .get("phase")
                == "Running"
            ),
            timeout=60,
            message="the pause pod to run",
        )
        for comp in abandoned_info.components:
            os.kill(comp.pid, signal.SIGKILL)
        assert processes_with_arg(str(abandoned_layout.containerd_socket))  # the pod's shim
        if state_dir_lost:
            shutil.rmtree(abandoned_info.state_dir, ignore_errors=True)  # mounts stay behind
            assert not Layout(abandoned_info.state_dir).state_file.exists()
        cli(dirs, "up", "--name", successor, "--cpu-nodes", "0", "--gpu-nodes", "0")
        assert not abandoned_info.state_dir.exists()
        assert not abandoned_layout.run_dir.exists()
        assert not processes_with_arg(str(abandoned_layout.containerd_socket))
        assert not mounts_under(abandoned_info.state_dir, abandoned_layout.run_dir)
        assert not [d for d in cgroup_dirs(abandoned_layout.cgroup_root) if d.exists()]
        assert all(c.healthy for c in status(successor, dirs).components)

        refused = subprocess.run(
            [sys.executable, "-m", "kuberunner", "dev", "cluster", "up", "--name", "pytest-third"],
            env={**os.environ, "KUBERUNNER_CLUSTERS_DIR": str(dirs)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert refused.returncode != 0
        assert f"the bridge {BRIDGE} exists" in refused.stderr, refused.stderr
        assert successor in refused.stderr, refused.stderr
        assert all(c.healthy for c in status(successor, dirs).components)
    finally:
        down(successor, clusters_dir=dirs)
        down(abandoned, clusters_dir=dirs)
    successor_dir = dirs / successor
    assert_host_clean(NodeLayout(successor_dir, successor), successor_dir, real)


def pause_pod(name: str) -> dict[str, Any]:
    """A pod of the node's own pause image (always loaded: it is the sandbox image)."""
    image = locate(NODE).pause_image_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": False,
            "containers": [{"name": "pause", "image": image, "imagePullPolicy": "Never"}],
        },
    }


def _start_time(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[19])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))

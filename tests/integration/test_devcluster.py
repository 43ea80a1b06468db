"""The dev cluster (`kuberunner dev cluster`) is a real, working Kubernetes control plane.

Everything goes through kubectl, the HTTP API or the CLI, against real processes.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from k8s_helpers import apply, kubectl, kubectl_json, kubectl_path, wait_for
from kuberunner_dev.cluster import ClusterInfo, api_client, attach_process, down
from kuberunner_dev.cluster.processes import free_ports, listening_ports, spawn

pytestmark = pytest.mark.cluster

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kuberunner", "dev", "cluster", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def read_state(state_dir: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads((state_dir / "cluster.json").read_text())
    return state


def pod(name: str, **spec: Any) -> dict[str, Any]:
    annotations = spec.pop("annotations", {})
    container: dict[str, Any] = {"name": "main", "image": "registry.invalid/app:1"}
    if "limits" in spec:
        container["resources"] = {"limits": spec.pop("limits")}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [container], **spec},
    }


def get_pod(cluster: ClusterInfo, ns: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = kubectl_json(cluster, "get", "pod", name, "-n", ns)
    return obj


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return None


def condition_status(obj: dict[str, Any], kind: str) -> str | None:
    cond = condition(obj, kind)
    return None if cond is None else str(cond["status"])


GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def test_nodes_match_the_contract(cluster: ClusterInfo) -> None:
    nodes = {n["metadata"]["name"]: n for n in kubectl_json(cluster, "get", "nodes")["items"]}
    assert set(nodes) == {"kwok-cpu-0", "kwok-cpu-1", "kwok-gpu-0", "kwok-gpu-1"}
    for name, node in nodes.items():
        assert condition_status(node, "Ready") == "True"
        alloc = node["status"]["allocatable"]
        assert (alloc["cpu"], alloc["memory"], alloc["pods"]) == ("8", "32Gi", "110")
        taints = node["spec"].get("taints") or []
        if name.startswith("kwok-gpu"):
            assert alloc["nvidia.com/gpu"] == "8"
            assert node["status"]["capacity"]["nvidia.com/gpu"] == "8"
            assert node["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
            assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in taints
        else:
            assert "nvidia.com/gpu" not in alloc
            assert taints == []  # no kwok fake-node taint: plain pods schedule here


def test_every_component_listens_only_on_loopback(cluster: ClusterInfo) -> None:
    pids = [c["pid"] for c in read_state(cluster.state_dir)["components"]]
    inodes: set[str] = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd) if fd.is_symlink() else ""
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    bound = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                bound.append(fields[1].rsplit(":", 1)[0])
    assert len(bound) >= len(COMPONENTS)
    loopback = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
    assert set(bound) <= loopback, bound


def test_crd_established_and_status_subresource(cluster: ClusterInfo, fresh_namespace: str) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.devcluster.kuberunner.io"},
        "spec": {
            "group": "devcluster.kuberunner.io",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer"}},
                                },
                                "status": {
                                    "type": "object",
                                    "properties": {"phase": {"type": "string"}},
                                },
                            },
                        }
                    },
                }
            ],
        },
    }
    apply(cluster, crd)
    try:
        kubectl(
            cluster,
            "wait",
            "--for=condition=Established",
            "crd/widgets.devcluster.kuberunner.io",
            "--timeout=30s",
        )
        widget = {
            "apiVersion": "devcluster.kuberunner.io/v1",
            "kind": "Widget",
            "metadata": {"name": "w1"},
            "spec": {"size": 3},
        }
        # Discovery of a just-established CRD can lag by a moment on the client side.
        wait_for(lambda: apply(cluster, widget, namespace=fresh_namespace), timeout=20)

        path = f"/apis/devcluster.kuberunner.io/v1/namespaces/{fresh_namespace}/widgets/w1"
        with api_client(cluster) as client:
            resp = client.patch(
                f"{path}/status",
                content=json.dumps({"status": {"phase": "Ready"}}),
                headers={"Content-Type": "application/merge-patch+json"},
            )
            assert resp.status_code == 200, resp.text
            # The main endpoint ignores status once the subresource exists.
            resp = client.patch(
                path,
                content=json.dumps({"status": {"phase": "Overwritten"}, "spec": {"size": 4}}),
                headers={"Content-Type": "application/merge-patch+json"},
            )
            assert resp.status_code == 200, resp.text
        got = kubectl_json(cluster, "get", "widget", "w1", "-n", fresh_namespace)
        assert got["status"] == {"phase": "Ready"}
        assert got["spec"] == {"size": 4}
    finally:
        kubectl(cluster, "delete", "crd", "widgets.devcluster.kuberunner.io", "--wait=false")


def test_deployment_pods_become_ready(cluster: ClusterInfo, fresh_namespace: str) -> None:
    kubectl(
        cluster,
        "create",
        "deployment",
        "web",
        "--image=registry.invalid/web:1",
        "--replicas=2",
        "-n",
        fresh_namespace,
    )
    kubectl(cluster, "rollout", "status", "deployment/web", "-n", fresh_namespace, "--timeout=60s")
    dep = kubectl_json(cluster, "get", "deployment", "web", "-n", fresh_namespace)
    assert dep["status"]["availableReplicas"] == 2
    pods = kubectl_json(cluster, "get", "pods", "-n", fresh_namespace, "-l", "app=web")["items"]
    assert len(pods) == 2
    for p in pods:
        assert p["status"]["phase"] == "Running"
        assert condition_status(p, "Ready") == "True"
        assert p["status"]["podIP"]
        assert p["spec"]["nodeName"].startswith("kwok-cpu-")  # GPU nodes are tainted


def test_scheduler_binds_gpu_pods_and_rejects_too_many(
    cluster: ClusterInfo, fresh_namespace: str
) -> None:
    ns = fresh_namespace
    apply(
        cluster,
        pod("two-gpus", limits={"nvidia.com/gpu": "2"}, tolerations=[GPU_TOLERATION]),
        pod("nine-gpus", limits={"nvidia.com/gpu": "9"}, tolerations=[GPU_TOLERATION]),
        namespace=ns,
    )
    node = wait_for(lambda: get_pod(cluster, ns, "two-gpus")["spec"].get("nodeName"), timeout=30)
    assert node.startswith("kwok-gpu-")
    wait_for(lambda: get_pod(cluster, ns, "two-gpus")["status"]["phase"] == "Running", timeout=30)

    def unschedulable() -> dict[str, Any] | None:
        cond = condition(get_pod(cluster, ns, "nine-gpus"), "PodScheduled")
        return cond if cond and cond["status"] == "False" else None

    cond = wait_for(unschedulable, timeout=30, message="PodScheduled=False on nine-gpus")
    assert cond["reason"] == "Unschedulable"
    assert "nvidia.com/gpu" in cond["message"]
    nine = get_pod(cluster, ns, "nine-gpus")
    assert nine["status"]["phase"] == "Pending"
    assert "nodeName" not in nine["spec"]


def test_simulated_pod_failures(cluster: ClusterInfo, fresh_namespace: str) -> None:
    ns = fresh_namespace
    apply(
        cluster,
        *(
            pod(mode, annotations={"kuberunner.io/simulate": mode})
            for mode in ("crashloop", "imagepull", "notready")
        ),
        pod("healthy"),
        namespace=ns,
    )

    def container(name: str) -> dict[str, Any] | None:
        statuses = get_pod(cluster, ns, name)["status"].get("containerStatuses")
        return dict(statuses[0]) if statuses else None

    crash = wait_for(lambda: container("crashloop"), timeout=30, message="crashloop status")
    assert crash["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert crash["restartCount"] > 0
    assert crash["ready"] is False

    pull = wait_for(lambda: container("imagepull"), timeout=30, message="imagepull status")
    assert pull["state"]["waiting"]["reason"] == "ImagePullBackOff"
    assert get_pod(cluster, ns, "imagepull")["status"]["phase"] == "Pending"

    wait_for(lambda: container("notready"), timeout=30, message="notready status")
    notready = get_pod(cluster, ns, "notready")
    assert notready["status"]["phase"] == "Running"
    assert condition_status(notready, "Ready") == "False"
    assert "running" in notready["status"]["containerStatuses"][0]["state"]

    wait_for(lambda: container("healthy"), timeout=30, message="healthy status")
    assert condition_status(get_pod(cluster, ns, "healthy"), "Ready") == "True"

    for name in ("crashloop", "imagepull", "notready"):  # and they stay that way
        assert condition_status(get_pod(cluster, ns, name), "Ready") == "False"


def test_rbac_is_enforced(cluster: ClusterInfo, fresh_namespace: str) -> None:
    ns = fresh_namespace
    kubectl(cluster, "create", "serviceaccount", "bot", "-n", ns)
    who = f"--as=system:serviceaccount:{ns}:bot"
    denied = kubectl(cluster, "auth", "can-i", "list", "pods", "-n", ns, who, check=False)
    assert (denied.returncode, denied.stdout.strip()) == (1, "no")

    token = kubectl(cluster, "create", "token", "bot", "-n", ns).stdout.strip()
    url = f"{cluster.server}/api/v1/namespaces/{ns}/pods"
    ca = ssl.create_default_context(cafile=str(cluster.ca_cert))
    with httpx.Client(verify=ca, trust_env=False, timeout=5) as client:
        assert client.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 403
        assert client.get(url).status_code == 403  # anonymous
        assert client.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401

        kubectl(cluster, "create", "role", "pod-reader", "--verb=list", "--resource=pods", "-n", ns)
        kubectl(
            cluster,
            "create",
            "rolebinding",
            "bot-reads",
            "--role=pod-reader",
            f"--serviceaccount={ns}:bot",
            "-n",
            ns,
        )
        wait_for(
            lambda: (
                client.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
            ),
            timeout=10,
        )
    allowed = kubectl(cluster, "auth", "can-i", "list", "pods", "-n", ns, who)
    assert allowed.stdout.strip() == "yes"
    still_denied = kubectl(cluster, "auth", "can-i", "list", "secrets", "-n", ns, who, check=False)
    assert still_denied.stdout.strip() == "no"


def test_status_reports_every_component_healthy(
    cluster: ClusterInfo, kuberunner_env: dict[str, str]
) -> None:
    done = run_cli(kuberunner_env, "status", "--name", cluster.name)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"cluster {cluster.name}: healthy")
    for comp in COMPONENTS:
        assert any(line.split()[:2] == [comp, "healthy"] for line in lines), done.stdout
    assert "total rss" in done.stdout


def test_up_on_a_running_cluster_changes_nothing(
    cluster: ClusterInfo, kuberunner_env: dict[str, str]
) -> None:
    before = read_state(cluster.state_dir)
    done = run_cli(kuberunner_env, "up", "--name", cluster.name)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        str(cluster.kubeconfig),
        f"export KUBECONFIG={cluster.kubeconfig}",
    ]
    assert "already running" in done.stderr
    assert read_state(cluster.state_dir) == before


def test_second_cluster_lifecycle_leaves_nothing_behind(
    cluster: ClusterInfo, kuberunner_env: dict[str, str]
) -> None:
    """A separately named cluster: custom node shape, a crash shows in status, down cleans up."""
    name = f"{cluster.name}-b"
    clusters_dir = cluster.state_dir.parent
    state_dir = clusters_dir / name
    try:
        done = run_cli(
            kuberunner_env,
            "up",
            "--name",
            name,
            "--cpu-nodes",
            "1",
            "--gpu-nodes",
            "1",
            "--gpus-per-node",
            "4",
            # kwok nodes only: the real node (one per machine) is test_real_node.py's.
            "--no-real-node",
        )
        assert done.returncode == 0, done.stderr
        kubeconfig = Path(done.stdout.splitlines()[0])
        assert kubeconfig.is_absolute()
        assert "kubeconfig" in kubeconfig.name
        assert kubeconfig.parent == state_dir

        nodes = subprocess.run(
            [kubectl_path(), f"--kubeconfig={kubeconfig}", "get", "nodes", "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
        )
        items = {n["metadata"]["name"]: n for n in json.loads(nodes.stdout)["items"]}
        assert set(items) == {"kwok-cpu-0", "kwok-gpu-0"}
        assert items["kwok-gpu-0"]["status"]["allocatable"]["nvidia.com/gpu"] == "4"

        # An extra process attached to the cluster is reported by status and stopped by down.
        (state_dir / "www").mkdir()
        (state_dir / "www" / "healthz").write_text("ok")
        [extra_port] = free_ports(1)
        extra = spawn(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(extra_port)],
            state_dir / "logs" / "extra.log",
            cwd=state_dir / "www",
            die_with_parent=True,
        )
        attach_process(
            name,
            "extra",
            extra,
            f"http://127.0.0.1:{extra_port}/healthz",
            state_dir / "logs" / "extra.log",
            clusters_dir=clusters_dir,
        )
        wait_for(lambda: extra_port in listening_ports(), timeout=10, message="extra server")

        state = read_state(state_dir)
        pids = {c["name"]: c["pid"] for c in state["components"]}
        assert set(pids) == {*COMPONENTS, "extra"}
        ports = {*state["ports"].values(), extra_port}
        assert ports <= listening_ports()

        os.kill(pids["kube-scheduler"], signal.SIGKILL)

        def unhealthy_status() -> subprocess.CompletedProcess[str] | None:
            result = run_cli(kuberunner_env, "status", "--name", name)
            return result if result.returncode == 1 else None

        crashed = wait_for(unhealthy_status, timeout=20, message="status to report the crash")
        assert "UNHEALTHY" in crashed.stdout
        extra_line = next(ln for ln in crashed.stdout.splitlines() if "extra" in ln)
        assert extra_line.split()[:2] == ["extra", "healthy"]
        line = next(
            ln for ln in crashed.stdout.splitlines() if ln.strip().startswith("kube-scheduler")
        )
        assert "crashed" in line
        assert "last lines of" in crashed.stdout
        assert "\n    | " in crashed.stdout  # the log tail

        refused = run_cli(kuberunner_env, "up", "--name", name)
        assert refused.returncode == 1
        assert "not healthy" in refused.stderr

        done = run_cli(kuberunner_env, "down", "--name", name)
        assert done.returncode == 0, done.stderr
        for pid in pids.values():
            assert not _running(pid), f"pid {pid} survived down"
        assert not (ports & listening_ports())
        assert not state_dir.exists()
        assert [p.name for p in clusters_dir.iterdir() if name in p.name] == []  # no lock file

        again = run_cli(kuberunner_env, "down", "--name", name)
        assert again.returncode == 0
        assert "not running" in again.stderr
    finally:
        down(name, clusters_dir=clusters_dir)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"

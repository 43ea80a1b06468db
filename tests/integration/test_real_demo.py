"""The README's main job on real pods: `kuberunner dev demo` as a user runs it, then the chart
with two operator replicas and leader election on the same real node.

The demo brings up its own cluster with the real node (one per machine, so this module holds it
alone), builds and loads the images, installs the chart (the operator runs as a pod under the
chart's ServiceAccount), applies the iris and GPU examples, waits with `kubectl wait` on real
probes and sends one prediction through the iris API server's Service.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8s_helpers import REPO, kubectl, kubectl_json, wait_for
from kuberunner_dev.cluster import ClusterInfo, down, info
from kuberunner_dev.cluster.binaries import locate
from kuberunner_dev.cluster.node import NODE_NAME

pytestmark = pytest.mark.cluster

OPERATOR_NS = "kuberunner-system"
DEMO_NS = "kuberunner-demo"
CHART = REPO / "charts" / "kuberunner"
LEADER_VALUES = CHART / "ci" / "03-leader-election-values.yaml"


@dataclass(frozen=True)
class Demo:
    cluster: ClusterInfo
    output: str


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    clusters_dir = tmp_path_factory.mktemp("demo")
    name = f"pytest-demo-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}  # the local cluster
    env["KUBERUNNER_CLUSTERS_DIR"] = str(clusters_dir)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "kuberunner", "dev", "demo", "--name", name],
            env=env,
            capture_output=True,
            text=True,
            timeout=1500,
            check=False,
        )
        print(done.stdout[-6000:])
        assert done.returncode == 0, f"demo failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        yield Demo(info(name, clusters_dir), done.stdout)
    finally:
        down(name, clusters_dir=clusters_dir)


def pods(cluster: ClusterInfo, ns: str, selector: str | None = None) -> list[dict[str, Any]]:
    args = ["get", "pods", "-n", ns, "-o", "json"]
    if selector:
        args += ["-l", selector]
    items: list[dict[str, Any]] = kubectl_json(cluster, *args)["items"]
    return items


def ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def helm(cluster: ClusterInfo, *args: str) -> subprocess.CompletedProcess[str]:
    binary = locate(("helm",))["helm"]
    return subprocess.run(
        [str(binary), f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def lease_holder(cluster: ClusterInfo) -> str:
    lease = kubectl_json(cluster, "get", "lease", "kuberunner-operator", "-n", OPERATOR_NS)
    return str(lease["spec"].get("holderIdentity") or "")


def test_demo_answers_a_real_prediction_from_pods_the_kubelet_probed(demo: Demo) -> None:
    out = demo.output
    assert '-> {"species": ["setosa", "virginica"]}' in out
    assert "SIMULATED by kwok" in out  # the GPU example, said plainly
    assert "timings: cluster up" in out

    # The operator is a pod from the chart, on the real node, under the chart's ServiceAccount.
    (operator,) = pods(demo.cluster, OPERATOR_NS)
    assert operator["spec"]["nodeName"] == NODE_NAME
    assert operator["spec"]["serviceAccountName"] == "kuberunner-operator"
    assert ready(operator)
    assert not any("operator-serviceaccount.kubeconfig" in line for line in _host_processes())

    # The iris runner and API server pods run on the real node; Ready came from their probes.
    iris = pods(demo.cluster, DEMO_NS, "app.kubernetes.io/instance=iris")
    assert {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in iris} == {
        "runner",
        "api-server",
    }
    for pod in iris:
        assert pod["spec"]["nodeName"] == NODE_NAME
        assert ready(pod)
        probe = pod["spec"]["containers"][0]["readinessProbe"]["httpGet"]
        assert probe["path"] == "/readyz"
        (status,) = pod["status"]["containerStatuses"]
        assert status["imageID"], "the kubelet ran an image from the node's containerd"
    # The GPU example's pod is on a simulated GPU node.
    (llm,) = pods(demo.cluster, DEMO_NS, "app.kubernetes.io/instance=llm")
    assert llm["spec"]["nodeName"].startswith("kwok-gpu-")


def _host_processes() -> list[str]:
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return lines


def test_chart_with_two_replicas_and_leader_election_installs_and_upgrades_on_the_real_node(
    demo: Demo,
) -> None:
    cluster = demo.cluster
    release = ["kuberunner", str(CHART), "-n", OPERATOR_NS, "-f", str(LEADER_VALUES)]
    done = helm(cluster, "upgrade", "--install", *release, "--wait", "--timeout", "3m")
    assert done.returncode == 0, done.stderr

    def both_ready_with_one_leader(expect_template: str | None = None) -> list[str] | None:
        operators = [
            p for p in pods(cluster, OPERATOR_NS) if "deletionTimestamp" not in p["metadata"]
        ]
        if len(operators) != 2 or not all(ready(p) for p in operators):
            return None
        if expect_template is not None:
            assert all(
                p["metadata"]["annotations"].get("touched") == expect_template for p in operators
            )
        names = [p["metadata"]["name"] for p in operators]
        holder = lease_holder(cluster)
        leaders = [n for n in names if holder.startswith(f"{n}-")]
        return names if len(leaders) == 1 else None

    first = wait_for(both_ready_with_one_leader, timeout=90, message="2 Ready operators, 1 leader")

    # An upgrade that changes the pod template rolls both pods (maxSurge 0, maxUnavailable 1):
    # it completes only because the new standby is Ready too.
    done = helm(
        cluster, "upgrade", *release, "--set-string", "podAnnotations.touched=1",
        "--wait", "--timeout", "3m",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rollout = kubectl(
        cluster, "rollout", "status", "deployment/kuberunner-operator", "-n", OPERATOR_NS,
        "--timeout=120s",
    )  # fmt: skip
    assert "successfully rolled out" in rollout.stdout
    second = wait_for(
        lambda: both_ready_with_one_leader(expect_template="1"),
        timeout=90,
        message="2 Ready operators of the new template, 1 leader",
    )
    assert not set(first) & set(second)

    # The new leader reconciles: a spec change of the iris service rolls out to Ready.
    patch = json.dumps({"spec": {"runners": [_iris_runner(replicas=2)]}})
    kubectl(cluster, "patch", "rsvc", "iris", "-n", DEMO_NS, "--type=merge", "-p", patch)
    kubectl(
        cluster, "wait", "--for=condition=Ready", "rsvc/iris", "-n", DEMO_NS, "--timeout=120s"
    )  # fmt: skip
    body = kubectl_json(cluster, "get", "rsvc", "iris", "-n", DEMO_NS)
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    (entry,) = [r for r in body["status"]["runners"] if r["name"] == "iris"]
    assert entry["readyReplicas"] == 2


def _iris_runner(replicas: int) -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "examples" / "iris.yaml").read_text())
    (runner,) = doc["spec"]["runners"]
    runner["replicas"] = replicas
    runner_spec: dict[str, Any] = runner
    return runner_spec

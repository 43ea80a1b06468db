"""Leader election: two operators on one Lease, only the holder acts; kill it, the other takes
over. Both processes are the real CLI against the dev cluster."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from test_operator_support import (
    OperatorProcess,
    install_crd,
    kubectl_wait_ready,
    new_namespace,
    rsvc,
    runner,
)

from k8s_helpers import apply, kubectl, kubectl_json, wait_for
from kuberunner_dev.cluster import ClusterInfo

pytestmark = pytest.mark.cluster


@pytest.fixture
def lease_ns(cluster: ClusterInfo) -> Iterator[str]:
    install_crd(cluster)
    name = new_namespace(cluster, "kr-lead")
    try:
        yield name
    finally:
        kubectl(cluster, "delete", "namespace", name, "--wait=false", check=False)


def holder(cluster: ClusterInfo, ns: str) -> str:
    lease = kubectl_json(cluster, "get", "lease", "kuberunner-operator", "-n", ns)
    return str(lease["spec"].get("holderIdentity") or "")


def test_only_the_lease_holder_reconciles_and_a_standby_takes_over(
    cluster: ClusterInfo, lease_ns: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    logs = tmp_path_factory.mktemp("leader")
    args = ("--leader-elect", f"--lease-namespace={lease_ns}", f"--namespace={lease_ns}")
    first = OperatorProcess(cluster, logs, *args, name="first")
    procs = [first]
    try:
        first.wait_ready()
        second = OperatorProcess(cluster, logs, *args, name="second")
        procs.append(second)
        wait_for(lambda: second.health("/healthz") == 200, timeout=30, message="standby live")
        # A standby can serve (it is Ready, so a two-replica Deployment rolls out), but the
        # endpoint says it is not the one leading.
        ready = second.get(second.health_port, "/readyz")
        assert ready.status_code == 200
        assert "standby" in ready.text
        leader_id = holder(cluster, lease_ns)
        assert leader_id

        apply(cluster, rsvc("one", [runner("r")]), namespace=lease_ns)
        kubectl_wait_ready(cluster, lease_ns, "one")
        assert first.metric("kuberunner_operator_reconcile_total") >= 1
        assert second.metric("kuberunner_operator_reconcile_total") == 0
        assert second.metric("kuberunner_operator_leader") == 0

        first.kill()
        wait_for(
            lambda: second.metric("kuberunner_operator_leader") == 1,
            timeout=60,
            message="the standby took the Lease",
        )
        # Ready again once its watches have synced, now as the leader.
        wait_for(
            lambda: "ok: leading" in second.get(second.health_port, "/readyz").text,
            timeout=30,
            message="the new leader Ready",
        )
        assert holder(cluster, lease_ns) not in ("", leader_id)
        apply(cluster, rsvc("two", [runner("r")]), namespace=lease_ns)
        kubectl_wait_ready(cluster, lease_ns, "two")
        assert second.metric("kuberunner_operator_reconcile_total") >= 1
    finally:
        for proc in procs:
            proc.kill()
            proc.stop()


def test_losing_the_lease_exits_non_zero(
    cluster: ClusterInfo, lease_ns: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    logs = tmp_path_factory.mktemp("lost")
    proc = OperatorProcess(
        cluster,
        logs,
        "--leader-elect",
        f"--lease-namespace={lease_ns}",
        f"--namespace={lease_ns}",
        name="lost",
    )
    try:
        proc.wait_ready()
        # Another identity takes the Lease (as an operator would after a partition).
        lease = kubectl_json(cluster, "get", "lease", "kuberunner-operator", "-n", lease_ns)
        lease["spec"]["holderIdentity"] = "someone-else"
        lease["spec"]["leaseDurationSeconds"] = 3600
        kubectl(cluster, "replace", "-f", "-", input=json.dumps(lease))
        wait_for(lambda: proc.proc.poll() is not None, timeout=30, message="operator exits")
        assert proc.proc.returncode == 1
        assert "leadership lost" in proc.log()
    finally:
        proc.kill()
        proc.stop()

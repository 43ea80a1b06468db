"""The periodic resync against the dev cluster: with nothing changed it writes nothing, and
it still repairs what no watch event reports as drift (a core Service has no generation)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_operator_support import OperatorProcess, install_crd, new_namespace, rsvc, runner

from k8s_helpers import apply, kubectl, kubectl_json, wait_for
from kuberunner_dev.cluster import ClusterInfo
from operator_support import wait_all_converged

pytestmark = pytest.mark.cluster

SERVICES = 5
WRITES = ("POST", "PUT", "PATCH", "DELETE")


def operator_writes(op: OperatorProcess) -> dict[str, float]:
    """Write requests this operator sent, by method (its own counter: the API server's
    counts would include the garbage collector cleaning up other tests' namespaces)."""
    return {m: op.metric("kuberunner_operator_api_requests_total", f'method="{m}"') for m in WRITES}


def test_resync_of_unchanged_services_writes_nothing_and_repairs_an_edited_service(
    cluster: ClusterInfo, tmp_path: Path
) -> None:
    install_crd(cluster)
    ns = new_namespace(cluster, "kr-resync")
    # Every service is resynced about every 5 s (the resync loop's period) instead of 5 min.
    op = OperatorProcess(
        cluster, tmp_path, f"--namespace={ns}", name="resync",
        env={"KUBERUNNER_OPERATOR_RESYNC": "2"},
    )  # fmt: skip
    try:
        op.wait_ready()
        for i in range(SERVICES):
            apply(cluster, rsvc(f"idle-{i}", [runner("r")]), namespace=ns)
        wait_all_converged(cluster, ns, SERVICES, timeout=90)
        # The HPA controller's first status write (within its 15 s sync period) is a real
        # change the operator reads; the idle window starts after it.
        wait_for(
            lambda: all(
                (h.get("status") or {}).get("conditions")
                for h in kubectl_json(cluster, "get", "hpa", "-n", ns)["items"]
            ),
            timeout=60,
            message="every HPA synced once",
        )
        time.sleep(3)
        unchanged = 'outcome="unchanged"'
        resyncs = op.metric("kuberunner_operator_resync_total", unchanged)
        before = operator_writes(op)
        time.sleep(12)
        after = operator_writes(op)
        done = op.metric("kuberunner_operator_resync_total", unchanged) - resyncs
        writes = {k: after[k] - before[k] for k in after if after[k] != before[k]}
        print(f"\n{done:g} resyncs of {SERVICES} unchanged services in 12 s; writes {writes}")
        assert done >= 2 * SERVICES, "the services were not resynced"
        assert writes == {}, writes

        # A core Service edited by hand: no generation records it, the resync repairs it.
        (service,) = kubectl_json(
            cluster, "get", "services", "-n", ns, "-l", "kuberunner.io/runner=r,"
            "kuberunner.io/service=idle-0",
        )["items"]  # fmt: skip
        name = service["metadata"]["name"]
        selector = service["spec"]["selector"]
        edit = {"spec": {"selector": {"kuberunner.io/runner": "someone-else"}}}
        kubectl(cluster, "patch", "service", name, "-n", ns, "--type=merge", "-p", json.dumps(edit))
        wait_for(
            lambda: (
                kubectl_json(cluster, "get", "service", name, "-n", ns)["spec"]["selector"]
                == selector
            ),
            timeout=20,
            message="the edited Service's selector restored by the resync",
        )
        assert op.metric("kuberunner_operator_resync_total", 'outcome="applied"') >= 1
        op.alive_or_raise()
    finally:
        op.stop()
        kubectl(cluster, "delete", "namespace", ns, "--wait=false", check=False)

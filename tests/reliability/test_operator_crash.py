"""The operator SIGKILLed in the middle of a burst of creates and again in the middle of a burst
of updates: after a restart every service converges, with exactly one Deployment and one Service
per runner and nothing orphaned. Real operator processes against the session dev cluster."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from test_operator_support import OperatorProcess, install_crd, new_namespace, rsvc, runner

from k8s_helpers import kubectl
from kuberunner_dev.cluster import ClusterInfo
from kuberunner_dev.cluster.cluster import api_client
from operator_support import RSVC_PATH, child_census, services, wait_all_converged

Figures = Callable[[str, object], None]


def _operator(cluster: ClusterInfo, logs: Path, ns: str, name: str) -> OperatorProcess:
    proc = OperatorProcess(cluster, logs, f"--namespace={ns}", name=name)
    proc.wait_ready()
    return proc


def test_sigkill_mid_create_burst_and_mid_update_burst(
    cluster: ClusterInfo, tmp_path: Path, long_run: bool, figures: Figures
) -> None:
    count = 200 if long_run else 50
    # Small requests: 200 pods (and a surge pod each during the update) must fit on the two
    # 8-CPU nodes, or the honest answer for some services is Unschedulable.
    small = {"resources": {"cpu": "10m", "memory": "16Mi"}}
    install_crd(cluster)
    ns = new_namespace(cluster, "kr-rel-crash")
    procs: list[OperatorProcess] = []
    try:
        procs.append(_operator(cluster, tmp_path, ns, "first"))
        path = RSVC_PATH.format(ns=ns)
        with api_client(cluster, timeout=30) as api:
            # Burst of creates; SIGKILL the operator half way, while it is reconciling.
            for i in range(count):
                r = api.post(path, json=rsvc(f"svc-{i:03d}", [runner("r", **small)]))
                assert r.status_code == 201, r.text
                if i == count // 2:
                    procs[-1].kill()
            restarted = time.monotonic()
            procs.append(_operator(cluster, tmp_path, ns, "second"))
            took = wait_all_converged(cluster, ns, count, timeout=120 + 2 * count)
            figures("create_burst", f"{count} services")
            figures("converged_after_restart_s", round(time.monotonic() - restarted, 1))
            figures("converge_wait_s", round(took, 1))
            census = child_census(cluster, ns)
            figures("census_after_creates", census)
            assert census["duplicates"] == {}
            assert census["orphans"] == []
            assert census["missing"] == []
            assert census["children"] == 2 * count

            # Burst of updates (a new env value per service); SIGKILL half way again.
            for i, body in enumerate(services(cluster, ns)):
                name = body["metadata"]["name"]
                env = [{"name": "REV", "value": "2"}]
                patch = {"spec": {"runners": [runner("r", env=env, **small)]}}
                r = api.patch(
                    f"{path}/{name}",
                    json=patch,
                    headers={"content-type": "application/merge-patch+json"},
                )
                assert r.status_code == 200, r.text
                if i == count // 2:
                    procs[-1].kill()
            restarted = time.monotonic()
            procs.append(_operator(cluster, tmp_path, ns, "third"))
            wait_all_converged(cluster, ns, count, timeout=120 + 2 * count)
            figures("converged_after_update_restart_s", round(time.monotonic() - restarted, 1))
            census = child_census(cluster, ns)
            assert census["duplicates"] == {}
            assert census["orphans"] == []
            assert census["missing"] == []
            assert census["children"] == 2 * count
            deployments = api.get(
                f"/apis/apps/v1/namespaces/{ns}/deployments",
                params={"labelSelector": "app.kubernetes.io/managed-by=kuberunner"},
            ).json()["items"]
            stale = [
                d["metadata"]["name"]
                for d in deployments
                if {"name": "REV", "value": "2"}
                not in (d["spec"]["template"]["spec"]["containers"][0].get("env") or [])
            ]
            assert stale == [], f"{len(stale)} Deployments without the update"
        for proc in procs[-1:]:
            proc.alive_or_raise()
            assert "Traceback" not in proc.log()
    finally:
        for proc in procs:
            proc.kill()
            proc.stop()
        kubectl(cluster, "delete", "namespace", ns, "--wait=false", check=False)

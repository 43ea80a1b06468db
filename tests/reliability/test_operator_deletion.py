"""Deletion in every order: the RunnerService first, its children first, the whole namespace.
No finalizer may leave anything stuck, nothing is left behind, and the operator neither
crashes nor loops on objects that are gone."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from test_operator_support import OperatorProcess, install_crd, new_namespace, rsvc, runner

from k8s_helpers import kubectl, kubectl_json, wait_for
from kuberunner_dev.cluster import ClusterInfo
from kuberunner_dev.cluster.cluster import api_client
from operator_support import RSVC_PATH, child_census, wait_all_converged

Figures = Callable[[str, object], None]
MANAGED = "app.kubernetes.io/managed-by=kuberunner"


def _create(cluster: ClusterInfo, ns: str, names: list[str]) -> None:
    with api_client(cluster) as api:
        for name in names:
            body = rsvc(name, [runner("a"), runner("b")], apiServer={"service": "svc:Svc"})
            r = api.post(RSVC_PATH.format(ns=ns), json=body)
            assert r.status_code == 201, r.text


def _managed(cluster: ClusterInfo, ns: str, kinds: str = "deployments,services") -> list[str]:
    items = kubectl_json(cluster, "get", kinds, "-n", ns, "-l", MANAGED)["items"]
    return [f"{i['kind']}/{i['metadata']['name']}" for i in items]


def _child_uids(cluster: ClusterInfo, ns: str) -> set[str]:
    items = kubectl_json(cluster, "get", "deployments,services", "-n", ns, "-l", MANAGED)
    return {i["metadata"]["uid"] for i in items["items"]}


def test_deletion_in_every_order_leaves_nothing_behind(
    cluster: ClusterInfo, tmp_path: Path, figures: Figures
) -> None:
    install_crd(cluster)
    first = new_namespace(cluster, "kr-rel-del")
    second = new_namespace(cluster, "kr-rel-del")
    op = OperatorProcess(cluster, tmp_path, "--namespace=kr-rel-del-*", name="deletion")
    try:
        op.wait_ready()
        _create(cluster, first, ["svc-first", "kids-first"])
        _create(cluster, second, ["in-ns-0", "in-ns-1", "in-ns-2"])
        wait_all_converged(cluster, first, 2, timeout=120)
        wait_all_converged(cluster, second, 3, timeout=120)
        assert child_census(cluster, first)["children"] == 2 * 2 * 3  # 3 components x 2 kinds

        # 1. The service first: its children are garbage-collected, the other service's stay.
        started = time.monotonic()
        kubectl(cluster, "delete", "rsvc", "svc-first", "-n", first, "--timeout=60s")
        wait_for(
            lambda: not any("svc-first" in n for n in _managed(cluster, first)),
            timeout=90,
            message="children of svc-first gone",
        )
        figures("service_first_gone_s", round(time.monotonic() - started, 1))
        assert child_census(cluster, first)["children"] == 6

        # 2. The children first (Deployments and Services): the operator recreates them while
        # the service lives, and deleting the service afterwards still removes everything.
        before = set(_managed(cluster, first))
        old_uids = _child_uids(cluster, first)
        started = time.monotonic()
        kubectl(cluster, "delete", "deployments,services", "-n", first, "-l", MANAGED,
                "--wait=false")  # fmt: skip

        def recreated() -> bool:
            now = set(_managed(cluster, first))
            if now != before:
                raise AssertionError(
                    f"missing {sorted(before - now)}, extra {sorted(now - before)}"
                )
            new_uids = _child_uids(cluster, first)
            if new_uids & old_uids:
                raise AssertionError(f"not yet deleted: {sorted(new_uids & old_uids)}")
            return len(new_uids) == len(old_uids)

        wait_for(recreated, timeout=60, message="children recreated")
        wait_all_converged(cluster, first, 1, timeout=120)
        figures("children_first_recreated_s", round(time.monotonic() - started, 1))
        census = child_census(cluster, first)
        assert census["duplicates"] == {}
        assert census["orphans"] == []
        assert census["missing"] == []
        kubectl(cluster, "delete", "rsvc", "kids-first", "-n", first, "--timeout=60s")
        wait_for(lambda: _managed(cluster, first) == [], timeout=90,
                 message="everything of kids-first gone")  # fmt: skip

        # 3. The namespace with its services: it goes away completely, nothing stuck.
        started = time.monotonic()
        kubectl(cluster, "delete", "namespace", second, "--wait=false")
        wait_for(
            lambda: kubectl(cluster, "get", "namespace", second, check=False).returncode != 0,
            timeout=120,
            message=f"namespace {second} deleted",
        )
        figures("namespace_gone_s", round(time.monotonic() - started, 1))

        # The operator survived all of it and does not keep retrying what is gone.
        errors = op.metric("kuberunner_operator_reconcile_total", 'result="error"')
        time.sleep(10)
        assert op.metric("kuberunner_operator_reconcile_total", 'result="error"') == errors
        op.alive_or_raise()
        assert "Traceback" not in op.log()
    finally:
        op.kill()
        op.stop()
        for ns in (first, second):
            kubectl(cluster, "delete", "namespace", ns, "--wait=false", check=False)

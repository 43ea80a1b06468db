"""Another field manager edits a child Deployment in fields the operator does not own (a
Deployment annotation and label): after the operator re-applies the Deployment for a spec
change, those edits are still there, and the operator's own fields are updated.

Pod-template annotations of another manager are NOT kept today (the operator restores the whole
pod template, which is also how it repairs env/image drift); see RELIABILITY.md, known issues."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from test_operator_support import (
    OperatorProcess,
    container_env,
    deployment,
    install_crd,
    new_namespace,
    rsvc,
    runner,
)

from k8s_helpers import kubectl, wait_for
from kuberunner_dev.cluster import ClusterInfo
from kuberunner_dev.cluster.cluster import api_client
from operator_support import RSVC_PATH, wait_all_converged

Figures = Callable[[str, object], None]


def test_fields_of_another_manager_are_left_alone(cluster: ClusterInfo, tmp_path: Path) -> None:
    install_crd(cluster)
    ns = new_namespace(cluster, "kr-rel-conflict")
    op = OperatorProcess(cluster, tmp_path, f"--namespace={ns}", name="conflict")
    try:
        op.wait_ready()
        path = RSVC_PATH.format(ns=ns)
        with api_client(cluster) as api:
            assert api.post(path, json=rsvc("shared", [runner("r")])).status_code == 201
        wait_all_converged(cluster, ns, 1, timeout=90)
        status = kubectl(cluster, "get", "rsvc", "shared", "-n", ns, "-o", "json").stdout
        name = json.loads(status)["status"]["runners"][0]["deployment"]
        # Another tool's server-side apply, as its own field manager.
        theirs = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "annotations": {"team.example/owner": "ml-platform"},
                         "labels": {"team.example/cost-center": "42"}},
        }  # fmt: skip
        kubectl(cluster, "apply", "--server-side", "--field-manager=other-tool", "-n", ns,
                "-f", "-", input=json.dumps(theirs))  # fmt: skip
        # A spec change makes the operator re-apply the Deployment.
        with api_client(cluster) as api:
            patch = {"spec": {"runners": [runner("r", env=[{"name": "REV", "value": "3"}])]}}
            r = api.patch(f"{path}/shared", json=patch,
                          headers={"content-type": "application/merge-patch+json"})  # fmt: skip
            assert r.status_code == 200, r.text
        wait_for(
            lambda: container_env(deployment(cluster, ns, name)).get("REV") == "3",
            timeout=30,
            message="operator re-applied the Deployment",
        )
        wait_all_converged(cluster, ns, 1, timeout=90)
        dep = deployment(cluster, ns, name)
        assert dep["metadata"]["annotations"]["team.example/owner"] == "ml-platform"
        assert dep["metadata"]["labels"]["team.example/cost-center"] == "42"
        shown = kubectl(cluster, "get", "deployment", name, "-n", ns, "-o", "json",
                        "--show-managed-fields").stdout  # fmt: skip
        managers = {m["manager"] for m in json.loads(shown)["metadata"]["managedFields"]}
        assert "other-tool" in managers
        op.alive_or_raise()
    finally:
        op.kill()
        op.stop()
        kubectl(cluster, "delete", "namespace", ns, "--wait=false", check=False)

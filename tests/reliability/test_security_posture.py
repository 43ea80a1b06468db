"""Security posture on the real cluster: Pod Security Admission `restricted` enforced on a
namespace admits the runner, API-server and operator pods (and refuses a non-compliant pod, so
enforcement is really on); the operator never logs Secret values or literal env values.

RBAC least privilege of the chart's ServiceAccount (`kubectl auth can-i --list` against the
written allow-list) is tested in tests/integration/test_helm_install.py and not repeated here.
"""

from __future__ import annotations

import functools
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_operator_support import OperatorProcess, install_crd, rsvc, runner

from k8s_helpers import REPO, kubectl, kubectl_json, wait_for
from kuberunner_dev.cluster import ClusterInfo
from kuberunner_dev.cluster.binaries import locate
from kuberunner_dev.cluster.cluster import api_client
from operator_support import RSVC_PATH, services, wait_all_converged

Figures = Callable[[str, object], None]
PSA = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/warn-version": "latest",
}


@pytest.fixture
def restricted_ns(cluster: ClusterInfo) -> Iterator[str]:
    name = f"kr-rel-psa-{secrets.token_hex(3)}"
    labels = [f"{k}={v}" for k, v in PSA.items()]
    kubectl(cluster, "create", "namespace", name)
    kubectl(cluster, "label", "namespace", name, *labels)
    try:
        yield name
    finally:
        kubectl(cluster, "delete", "namespace", name, "--wait=false", check=False)


@functools.cache
def helm_path() -> str:
    return str(locate(("helm",))["helm"])


def failed_creates(cluster: ClusterInfo, ns: str) -> list[str]:
    events = kubectl_json(cluster, "get", "events", "-n", ns)["items"]
    return [e.get("message", "") for e in events if e.get("reason") == "FailedCreate"]


def test_pod_security_restricted_admits_runner_api_server_and_operator_pods(
    cluster: ClusterInfo, restricted_ns: str, tmp_path: Path, figures: Figures
) -> None:
    ns = restricted_ns
    # Enforcement is on: a pod with default (baseline-only) settings is refused.
    bad = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "unhardened"},
        "spec": {"containers": [{"name": "c", "image": "registry.example/x:1"}]},
    }
    refused = kubectl(cluster, "apply", "-n", ns, "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr

    install_crd(cluster)
    op = OperatorProcess(cluster, tmp_path, f"--namespace={ns}", name="psa")
    try:
        op.wait_ready()
        body = rsvc(
            "guarded",
            [runner("r", replicas=2)],
            apiServer={"service": "service:svc", "replicas": 1},
        )
        with api_client(cluster) as api:
            r = api.post(RSVC_PATH.format(ns=ns), json=body)
            assert r.status_code == 201, r.text
        wait_all_converged(cluster, ns, 1, timeout=120)
        pods = kubectl_json(cluster, "get", "pods", "-n", ns)["items"]
        components = sorted(p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods)
        figures("admitted_pods", components)
        assert components == ["api-server", "runner", "runner"]
        assert failed_creates(cluster, ns) == []
        op.alive_or_raise()
    finally:
        op.kill()
        op.stop()

    # The chart's operator Deployment (rendered by helm) is admitted too.
    rendered = subprocess.run(
        [helm_path(), "template", "kr", str(REPO / "charts" / "kuberunner"), "-n", ns,
         "--set", "rbac.create=false"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    wanted = [
        doc
        for doc in yaml.safe_load_all(rendered)
        if doc and doc.get("kind") in ("Deployment", "ServiceAccount")
    ]
    assert any(d["kind"] == "Deployment" for d in wanted)
    applied = kubectl(
        cluster, "apply", "-n", ns, "-f", "-", input=yaml.safe_dump_all(wanted), check=False
    )
    assert applied.returncode == 0, applied.stderr
    assert "would violate PodSecurity" not in applied.stderr
    operator_pods = wait_for(
        lambda: [
            p
            for p in kubectl_json(cluster, "get", "pods", "-n", ns)["items"]
            if p["metadata"]["labels"].get("app.kubernetes.io/component") not in
            ("runner", "api-server")
        ],
        timeout=60,
        message="operator pod created",
    )  # fmt: skip
    figures("operator_pods_admitted", len(operator_pods))
    assert failed_creates(cluster, ns) == []


def test_operator_never_logs_secret_values(
    cluster: ClusterInfo, restricted_ns: str, tmp_path: Path
) -> None:
    ns = restricted_ns
    secret_value = "db-pass-" + secrets.token_hex(8)
    literal = "sk-live-" + secrets.token_hex(8)
    kubectl(
        cluster, "create", "secret", "generic", "creds", "-n", ns,
        f"--from-literal=password={secret_value}",
    )  # fmt: skip
    from_secret = {"name": "DB_PASSWORD",
                   "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}  # fmt: skip
    api_key = {"name": "API_KEY", "value": literal}
    install_crd(cluster)
    op = OperatorProcess(cluster, tmp_path, f"--namespace={ns}", name="secrets")
    try:
        op.wait_ready()
        good = rsvc("with-secrets", [runner("r", env=[from_secret, api_key])], env=[api_key])
        # An invalid runner too, so error and event paths run with the same env.
        bad_runner = runner("frac", env=[from_secret, api_key], workersPerResource=1.5,
                            supportedResources=["nvidia.com/gpu", "cpu"],
                            resources={"cpu": "1", "nvidia.com/gpu": 2})  # fmt: skip
        bad = rsvc("invalid-with-secrets", [bad_runner], env=[from_secret, api_key])
        with api_client(cluster) as api:
            for body in (good, bad):
                r = api.post(RSVC_PATH.format(ns=ns), json=body)
                assert r.status_code == 201, r.text

        def reported() -> bool:
            return all(
                (b.get("status") or {}).get("observedGeneration") == 1
                for b in services(cluster, ns)
            )

        wait_for(reported, timeout=60, message="both services reported")
        # Edit to run the update path as well.
        kubectl(cluster, "patch", "rsvc", "with-secrets", "-n", ns, "--type=merge",
                "-p", '{"spec": {"env": [{"name": "API_KEY", "value": "' + literal + '"},'
                '{"name": "X", "value": "1"}]}}')  # fmt: skip
        wait_for(
            lambda: all(
                (b.get("status") or {}).get("observedGeneration") == b["metadata"]["generation"]
                for b in services(cluster, ns)
            ),
            timeout=60,
            message="update reported",
        )
        log = op.log()
        assert secret_value not in log
        assert literal not in log
        # The Secret value never lands in a child either: the Deployment keeps the reference.
        deployments = kubectl_json(cluster, "get", "deployments", "-n", ns)["items"]
        assert deployments
        text = yaml.safe_dump(deployments)
        assert secret_value not in text
        env: list[dict[str, Any]] = deployments[0]["spec"]["template"]["spec"]["containers"][0][
            "env"
        ]
        assert from_secret in env
        events = kubectl(cluster, "get", "events", "-n", ns, "-o", "yaml").stdout
        assert secret_value not in events
        assert literal not in events
        op.alive_or_raise()
    finally:
        op.kill()
        op.stop()

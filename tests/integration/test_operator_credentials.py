"""The operator's credentials follow rotation: a bound ServiceAccount token in a `tokenFile`,
replaced by a new one while the old one is revoked (its bound Secret deleted), keeps the
operator reconciling; a token revoked with no replacement shows as a metric, a log line and,
after the bound, failing liveness, and all recovers once a new token is written."""

from __future__ import annotations

import os
import secrets
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from test_operator_support import (
    OperatorProcess,
    install_crd,
    kubectl_wait_ready,
    new_namespace,
    rsvc,
    runner,
)

from k8s_helpers import apply, kubectl, wait_for
from kuberunner_dev.cluster import ClusterInfo

pytestmark = pytest.mark.cluster

SA = "rotating"


@pytest.fixture
def ns(cluster: ClusterInfo) -> Iterator[str]:
    install_crd(cluster)
    name = new_namespace(cluster, "kr-cred")
    binding = f"kr-cred-{secrets.token_hex(3)}"
    kubectl(cluster, "create", "serviceaccount", SA, "-n", name)
    kubectl(
        cluster,
        "create",
        "clusterrolebinding",
        binding,
        "--clusterrole=cluster-admin",
        f"--serviceaccount={name}:{SA}",
    )
    try:
        yield name
    finally:
        kubectl(cluster, "delete", "clusterrolebinding", binding, check=False)
        kubectl(cluster, "delete", "namespace", name, "--wait=false", check=False)


def bound_token(cluster: ClusterInfo, ns: str, secret: str) -> str:
    """A ServiceAccount token that is valid while Secret `secret` exists (as a pod's projected
    token is valid while its pod exists)."""
    kubectl(cluster, "create", "secret", "generic", secret, "-n", ns)
    out = kubectl(
        cluster,
        "create",
        "token",
        SA,
        "-n",
        ns,
        "--bound-object-kind=Secret",
        f"--bound-object-name={secret}",
        "--duration=1h",
    )
    return out.stdout.strip()


def write_token(path: Path, token: str) -> None:
    """Replace the file at once, as the kubelet swaps a projected volume's contents."""
    tmp = path.with_suffix(".new")
    tmp.write_text(token)
    os.replace(tmp, path)


def token_kubeconfig(cluster: ClusterInfo, token_file: Path, out: Path) -> Path:
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    user = {"name": "rotating", "user": {"tokenFile": str(token_file)}}
    context = {"name": "rotating", "context": {"cluster": admin["clusters"][0]["name"]}}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [user],
        "contexts": [{**context, "context": {**context["context"], "user": "rotating"}}],
        "current-context": "rotating",
    }
    out.write_text(yaml.safe_dump(config))
    return out


def accepted(cluster: ClusterInfo, token: str) -> int:
    """The API server's answer to a request made with `token`."""
    answer = httpx.get(
        f"{cluster.server}/api/v1/namespaces",
        headers={"Authorization": f"Bearer {token}"},
        verify=ssl.create_default_context(cafile=str(cluster.ca_cert)),
        timeout=5,
    )
    return answer.status_code


def test_operator_keeps_reconciling_across_token_rotation_and_revocation(
    cluster: ClusterInfo, ns: str, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    write_token(token_file, bound_token(cluster, ns, "tok-1"))
    kubeconfig = token_kubeconfig(cluster, token_file, tmp_path / "kubeconfig")
    op = OperatorProcess(
        cluster,
        tmp_path,
        f"--namespace={ns}",
        env={"KUBECONFIG": str(kubeconfig), "KUBERUNNER_OPERATOR_AUTH_FAIL_AFTER": "3"},
    )
    try:
        op.wait_ready()
        apply(cluster, rsvc("first", [runner("r")]), namespace=ns)
        kubectl_wait_ready(cluster, ns, "first")

        # Rotation: a new token in the file, then the old one revoked.
        old = token_file.read_text()
        write_token(token_file, bound_token(cluster, ns, "tok-2"))
        kubectl(cluster, "delete", "secret", "tok-1", "-n", ns)
        wait_for(lambda: accepted(cluster, old) == 401, timeout=20, message="old token revoked")
        apply(cluster, rsvc("second", [runner("r")]), namespace=ns)
        kubectl_wait_ready(cluster, ns, "second")
        assert op.metric("kuberunner_operator_api_auth_failing") == 0
        assert op.health("/healthz") == 200

        # Revocation with no new token: visible, then liveness fails after the bound. (The API
        # server caches a token's validity for a few seconds: wait until it refuses it.)
        current = token_file.read_text()
        kubectl(cluster, "delete", "secret", "tok-2", "-n", ns)
        wait_for(lambda: accepted(cluster, current) == 401, timeout=20, message="token revoked")
        apply(cluster, rsvc("third", [runner("r")]), namespace=ns)
        wait_for(
            lambda: op.metric("kuberunner_operator_api_auth_failing") == 1,
            timeout=30,
            message="auth failure visible in metrics",
        )
        assert op.metric("kuberunner_operator_api_auth_failures_total", 'code="401"') >= 1
        wait_for(lambda: op.health("/healthz") == 503, timeout=30, message="liveness fails")
        assert "condition=CredentialsRefused status=True" in op.log()

        # A new token written: the next retry reads it, and everything recovers.
        write_token(token_file, bound_token(cluster, ns, "tok-3"))
        kubectl_wait_ready(cluster, ns, "third", timeout=60)
        wait_for(lambda: op.health("/healthz") == 200, timeout=15, message="live again")
        assert op.metric("kuberunner_operator_api_auth_failing") == 0
        assert "condition=CredentialsRefused status=False" in op.log()
    finally:
        code = op.stop()
    assert code == 0, op.log()[-3000:]

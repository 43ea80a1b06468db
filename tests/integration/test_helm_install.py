"""`helm install --wait`, `helm upgrade` and `helm uninstall` of the chart on the local cluster,
with `kubectl auth can-i` checks of the operator's ServiceAccount: every right in the
contracts.md list is granted, and nothing more of the kinds that matter (Secrets, Nodes, Pods
writes, RBAC, other namespaces when namespaced).

kwok makes the operator pod Running and Ready without pulling the image, which is all that the
install/upgrade/uninstall mechanics need; the operator itself is tested elsewhere.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8s_helpers import kubectl, kubectl_json, wait_for
from kuberunner_dev.cluster import ClusterInfo
from kuberunner_dev.cluster.binaries import locate

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kuberunner"
CRD_NAME = "runnerservices.kuberunner.io"


@functools.cache
def helm_path() -> str:
    return str(locate(("helm",))["helm"])


def helm(cluster: ClusterInfo, *args: str, timeout: float = 180) -> str:
    done = subprocess.run(
        [helm_path(), f"--kubeconfig={cluster.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stderr}\n{done.stdout}"
    return done.stdout


def adopt_existing_crd(cluster: ClusterInfo, release: str, namespace: str) -> None:
    """Other tests of the session may have applied crds/ with kubectl; hand the CRD to this
    release (Helm's documented adoption metadata) so that the chart's CRD template applies."""
    if kubectl(cluster, "get", "crd", CRD_NAME, check=False).returncode != 0:
        return
    kubectl(cluster, "label", "--overwrite", "crd", CRD_NAME, "app.kubernetes.io/managed-by=Helm")
    kubectl(
        cluster,
        "annotate",
        "--overwrite",
        "crd",
        CRD_NAME,
        f"meta.helm.sh/release-name={release}",
        f"meta.helm.sh/release-namespace={namespace}",
    )


def can_i(cluster: ClusterInfo, user: str, verb: str, resource: str, namespace: str | None) -> bool:
    ns = ["-n", namespace] if namespace else []
    done = kubectl(cluster, "auth", "can-i", verb, resource, "--as", user, *ns, check=False)
    answer = done.stdout.strip()
    assert answer in {"yes", "no"}, done.stderr
    return answer == "yes"


Right = tuple[str, str, str]  # (group, resource[/subresource], verb)
ROW = re.compile(r"^(\S*)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$")


def listed_rights(cluster: ClusterInfo, user: str, namespace: str) -> set[Right]:
    """Every resource right of `user` in `namespace` (cluster-wide ones included), as
    `kubectl auth can-i --list` reports it."""
    out = kubectl(cluster, "auth", "can-i", "--list", "--as", user, "-n", namespace).stdout
    rights: set[Right] = set()
    for line in out.splitlines()[1:]:
        match = ROW.match(line)
        assert match, f"unexpected can-i --list row: {line!r}"
        resource, _urls, names, verbs = match.groups()
        if not resource:  # non-resource URLs (/api, /healthz, ...)
            continue
        assert names == "", f"{resource}: rights limited to names {names}"
        head, _, rest = resource.partition(".")
        sub = ""
        if "/" in rest:  # printed as "<resource>.<group>/<subresource>"
            rest, _, sub = rest.partition("/")
        name = head + (f"/{sub}" if sub else "")
        for verb in verbs.split():
            rights.add((rest, name, verb))
    return rights


def own_rights(cluster: ClusterInfo, sa: str, namespace: str) -> set[Right]:
    """The ServiceAccount's rights minus those every service account has (discovery,
    self-reviews), which a ServiceAccount without bindings shows."""
    nobody = sa.rsplit(":", 1)[0] + ":kuberunner-test-nobody"
    return listed_rights(cluster, sa, namespace) - listed_rights(cluster, nobody, namespace)


# The contract's list (docs/contracts.md, "Operator process"), split by where it applies.
NAMESPACED: set[Right] = {
    *{("kuberunner.io", "runnerservices", v) for v in ("get", "list", "watch", "patch", "update")},
    *{("kuberunner.io", "runnerservices/status", v) for v in ("get", "patch", "update")},
    ("kuberunner.io", "runnerservices/finalizers", "update"),
    *{
        (g, r, v)
        for g, r in (
            ("apps", "deployments"),
            ("", "services"),
            ("autoscaling", "horizontalpodautoscalers"),
            ("policy", "poddisruptionbudgets"),
        )
        for v in ("get", "list", "watch", "create", "patch", "update", "delete")
    },
    *{("", "pods", v) for v in ("get", "list", "watch")},
    # autoRollback reads the last Ready revision's pod template from its ReplicaSet.
    *{("apps", "replicasets", v) for v in ("get", "list")},
    ("", "events", "create"),
    ("", "events", "patch"),
}
SCANNING: set[Right] = {
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
}
LEASES: set[Right] = {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")}
# Explicit `can-i` checks of rights it must never have; None: cluster-scoped.
REFUSED_NAMESPACED = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("watch", "secrets"),
    ("create", "pods"),
    ("delete", "pods"),
    ("create", "pods/exec"),
    ("create", "runnerservices.kuberunner.io"),
    ("delete", "runnerservices.kuberunner.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
    ("get", "configmaps"),
    ("delete", "leases.coordination.k8s.io"),
    ("create", "serviceaccounts/token"),
]
REFUSED_CLUSTER = [
    ("get", "nodes"),
    ("list", "nodes"),
    ("delete", "nodes"),
    ("patch", "nodes"),
    ("create", "namespaces"),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
]


def check_refused(cluster: ClusterInfo, sa: str, namespace: str) -> None:
    granted = [(v, r) for v, r in REFUSED_NAMESPACED if can_i(cluster, sa, v, r, namespace)]
    granted += [(v, r) for v, r in REFUSED_CLUSTER if can_i(cluster, sa, v, r, None)]
    assert granted == []


def ours_cluster_scoped(cluster: ClusterInfo, release: str) -> list[str]:
    """ClusterRoles and ClusterRoleBindings of the release: by its labels or by its name."""
    items = kubectl_json(cluster, "get", "clusterroles,clusterrolebindings")["items"]
    return sorted(
        f"{item['kind'].lower()}.rbac.authorization.k8s.io/{item['metadata']['name']}"
        for item in items
        if release in item["metadata"]["name"]
        or (item["metadata"].get("labels") or {}).get("app.kubernetes.io/instance") == release
    )


def docs_of(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def deployment_ready(cluster: ClusterInfo, name: str, namespace: str) -> dict[str, Any]:
    deploy: dict[str, Any] = kubectl_json(cluster, "get", "deployment", name, "-n", namespace)
    return deploy


@pytest.fixture
def release(cluster: ClusterInfo, fresh_namespace: str) -> Iterator[str]:
    """A release name unique to the test; uninstalled afterwards if the test did not."""
    name = f"kuberunner-{secrets.token_hex(3)}"  # contains the chart name: fullname == release
    try:
        yield name
    finally:
        subprocess.run(
            [helm_path(), f"--kubeconfig={cluster.kubeconfig}", "uninstall", name, "-n",
             fresh_namespace, "--wait", "--timeout", "60s"],
            capture_output=True, timeout=90, check=False,
        )  # fmt: skip


def test_install_upgrade_uninstall_cluster_wide(
    cluster: ClusterInfo, fresh_namespace: str, release: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = fresh_namespace
    adopt_existing_crd(cluster, release, ns)
    start = time.monotonic()
    notes = helm(cluster, "install", release, str(CHART), "-n", ns, "--wait", "--timeout", "120s")
    install_seconds = time.monotonic() - start
    with capsys.disabled():
        print(f"\n[measure] helm install --wait: {install_seconds:.1f} s")
    assert f"kubectl -n {ns} rollout status deployment/{release}-operator" in notes
    assert "kubectl get rsvc -A -w" in notes
    assert "kubectl apply -n default -f examples/cpu-runner.yaml" in notes
    assert "helm.sh/resource-policy: keep" in notes

    operator = f"{release}-operator"
    deploy = deployment_ready(cluster, operator, ns)
    assert deploy["status"].get("readyReplicas") == 1
    pod_spec = deploy["spec"]["template"]["spec"]
    assert pod_spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    crd = kubectl_json(cluster, "get", "crd", CRD_NAME)
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == release

    sa = f"system:serviceaccount:{ns}:{operator}"
    other_ns = "default"  # cluster-wide: the rights hold in every namespace
    for where in (ns, other_ns):
        assert own_rights(cluster, sa, where) == NAMESPACED | SCANNING
    assert can_i(cluster, sa, "patch", "runnerservices.kuberunner.io/status", other_ns)
    check_refused(cluster, sa, ns)
    assert sorted(ours_cluster_scoped(cluster, release)) == [
        f"clusterrole.rbac.authorization.k8s.io/{operator}",
        f"clusterrolebinding.rbac.authorization.k8s.io/{operator}",
    ]

    # Upgrade: two replicas with leader election; the lease rights appear in the release ns only.
    helm(
        cluster, "upgrade", release, str(CHART), "-n", ns, "--wait", "--timeout", "120s",
        "--set", "replicas=2", "--set", "leaderElection.enabled=true",
    )  # fmt: skip
    deploy = deployment_ready(cluster, operator, ns)
    assert deploy["spec"]["replicas"] == 2
    assert deploy["status"].get("readyReplicas") == 2
    assert deploy["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "--leader-elect" in deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert own_rights(cluster, sa, ns) == NAMESPACED | SCANNING | LEASES
    assert own_rights(cluster, sa, other_ns) == NAMESPACED | SCANNING
    check_refused(cluster, sa, ns)
    history = json.loads(helm(cluster, "history", release, "-n", ns, "-o", "json"))
    assert [h["status"] for h in history] == ["superseded", "deployed"]

    helm(cluster, "uninstall", release, "-n", ns, "--wait", "--timeout", "60s")
    assert ours_cluster_scoped(cluster, release) == []
    assert kubectl(cluster, "get", "deployment", operator, "-n", ns, check=False).returncode != 0
    # The CRD stays (keep policy), so RunnerServices elsewhere survive the uninstall.
    assert kubectl(cluster, "get", "crd", CRD_NAME, check=False).returncode == 0
    assert not can_i(cluster, sa, "list", "runnerservices.kuberunner.io", ns)


def test_namespaced_install_grants_rights_only_in_watched_namespaces(
    cluster: ClusterInfo, fresh_namespace: str, release: str
) -> None:
    ns = fresh_namespace
    watched = f"{ns}-w"
    kubectl(cluster, "create", "namespace", watched)
    try:
        helm(
            cluster, "install", release, str(CHART), "-n", ns, "--wait", "--timeout", "120s",
            "--set", "crds.install=false", "--set", f"watchNamespaces={{{watched}}}",
            "--set", "rbac.aggregateToDefaultRoles=true",
        )  # fmt: skip
        sa = f"system:serviceaccount:{ns}:{release}-operator"
        args = deployment_ready(cluster, f"{release}-operator", ns)["spec"]["template"]["spec"][
            "containers"
        ][0]["args"]
        assert f"--namespace={watched}" in args
        assert "--all-namespaces" not in args
        assert own_rights(cluster, sa, watched) == NAMESPACED | SCANNING
        assert own_rights(cluster, sa, ns) == SCANNING
        assert own_rights(cluster, sa, "default") == SCANNING
        check_refused(cluster, sa, watched)
        # Aggregation: the built-in `view` role now reads RunnerServices, `edit` writes them.
        kubectl(cluster, "create", "rolebinding", "viewer", "-n", watched, "--clusterrole=view",
                "--user=jane")  # fmt: skip
        # (the controller-manager aggregates ClusterRoles asynchronously)
        wait_for(
            lambda: can_i(cluster, "jane", "list", "runnerservices.kuberunner.io", watched),
            timeout=30,
            message="view to aggregate RunnerService read access",
        )
        assert not can_i(cluster, "jane", "create", "runnerservices.kuberunner.io", watched)
        helm(cluster, "uninstall", release, "-n", ns, "--wait", "--timeout", "60s")
        assert ours_cluster_scoped(cluster, release) == []
        roles = kubectl(cluster, "get", "roles,rolebindings", "-n", watched, "-o", "name")
        assert release not in roles.stdout
    finally:
        kubectl(cluster, "delete", "namespace", watched, "--wait=false", check=False)


def test_plain_manifest_installs_with_kubectl_apply_k(cluster: ClusterInfo) -> None:
    """`kubectl apply --server-side -k deploy/` (the same objects as deploy/kuberunner.yaml)
    creates a working install; everything but the shared CRD is deleted afterwards."""
    built = kubectl(cluster, "kustomize", str(REPO / "deploy")).stdout
    plain = (REPO / "deploy" / "kuberunner.yaml").read_text()

    def canonical(text: str) -> list[str]:
        return sorted(json.dumps(d, sort_keys=True) for d in docs_of(text))

    assert canonical(built) == canonical(plain)
    objects = [d for d in docs_of(plain) if d["kind"] != "CustomResourceDefinition"]
    try:
        kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-k", str(REPO / "deploy"))
        kubectl(
            cluster, "rollout", "status", "deployment/kuberunner-operator",
            "-n", "kuberunner-system", "--timeout=120s", timeout=150,
        )  # fmt: skip
        sa = "system:serviceaccount:kuberunner-system:kuberunner-operator"
        assert own_rights(cluster, sa, "default") == NAMESPACED | SCANNING
    finally:
        kubectl(
            cluster,
            "delete",
            "--ignore-not-found",
            "--wait=true",
            "--timeout=90s",
            "-f",
            "-",
            input="\n---\n".join(yaml.safe_dump(o) for o in objects),
            check=False,
            timeout=120,
        )  # fmt: skip  (waits: a later install into kuberunner-system must start clean)

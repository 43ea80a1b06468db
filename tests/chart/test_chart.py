"""The Helm chart, rendered by the real helm binary (no cluster needed).

Checks lint, the values schema, the operator Deployment's shape, that RBAC is exactly the list in
docs/contracts.md ("Operator process"), the CRD templates against crds/, the monitoring toggles
and the plain manifest's freshness.
"""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kuberunner_dev.cluster.binaries import locate

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kuberunner"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
CONTRACTS = REPO / "docs" / "contracts.md"

Manifest = dict[str, Any]


@functools.cache
def helm() -> str:
    return str(locate(("helm",))["helm"])


def run_helm(*args: str, values: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm(), *args], input=values, capture_output=True, text=True, timeout=120, check=False
    )


def template(values: str = "", *args: str, release: str = "t") -> list[Manifest]:
    """`helm template` with the values YAML text given; the rendered objects."""
    done = run_helm(
        "template", release, str(CHART), "--namespace", "kr-system", "--kube-version", "1.36.2",
        "-f", "-", *args, values=values,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def template_error(values: str) -> str:
    done = run_helm(
        "template", "t", str(CHART), "--kube-version", "1.36.2", "-f", "-", values=values
    )
    assert done.returncode != 0, f"helm template accepted:\n{values}"
    return done.stderr


def by_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Manifest], kind: str) -> Manifest:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def operator_container(docs: list[Manifest]) -> Manifest:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return containers[0]  # type: ignore[no-any-return]


# --- lint and schema ------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda p: p.name if p else "defaults")
def test_helm_lint_strict(values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART)] + (["-f", str(values)] if values else [])
    done = run_helm(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ("image: {pullPolicy: Sometimes}", "at '/image/pullPolicy': value must be one of"),
        ("replica: 2", "additional properties 'replica' not allowed"),
        ("logFormat: yaml", "at '/logFormat'"),
        ("watchNamespaces: [Team_A]", "at '/watchNamespaces/0'"),
        ("replicas: 0", "at '/replicas'"),
        ("metrics: {serviceMonitor: {enabled: true, interval: soon}}", "interval"),
        ("prometheusRule: {enabled: true, runnerErrorRatio: 2}", "runnerErrorRatio"),
    ],
)
def test_values_schema_rejects_bad_values(values: str, message: str) -> None:
    err = template_error(values)
    assert "don't meet the specifications of the schema" in err
    assert message in err


def test_two_replicas_need_leader_election() -> None:
    err = template_error("replicas: 2")
    assert "replicas: 2 needs leaderElection.enabled=true" in err


def test_service_monitor_needs_the_metrics_service() -> None:
    err = template_error("metrics: {service: {enabled: false}, serviceMonitor: {enabled: true}}")
    assert "metrics.serviceMonitor.enabled needs metrics.service.enabled" in err


# --- operator Deployment --------------------------------------------------------------------------


def test_default_deployment_is_hardened_and_follows_the_operator_contract() -> None:
    docs = template()
    deploy = one(docs, "Deployment")
    spec = deploy["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = operator_container(docs)
    assert c["image"] == "localhost/kuberunner-operator:dev"
    assert c["command"] == ["kuberunner", "operator", "run"]
    assert c["args"] == [
        "--all-namespaces",
        "--metrics-address=0.0.0.0:8080",
        "--health-address=0.0.0.0:8081",
        "--log-format=json",
    ]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert c["resources"]["requests"]
    assert c["resources"]["limits"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # /tmp is the only writable path (read-only root filesystem).
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    # The selector can never match runner pods (which also carry app.kubernetes.io/name).
    assert spec["selector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"


def test_watch_namespaces_become_flags() -> None:
    docs = template("watchNamespaces: [team-a, team-b]\nlogFormat: text")
    args = operator_container(docs)["args"]
    assert "--all-namespaces" not in args
    assert [a for a in args if a.startswith("--namespace")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]
    assert "--log-format=text" in args


def test_leader_election_with_two_replicas() -> None:
    docs = template("replicas: 2\nleaderElection: {enabled: true}")
    spec = one(docs, "Deployment")["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 1
    args = operator_container(docs)["args"]
    assert "--leader-elect" in args
    assert "--lease-namespace=kr-system" in args


# --- RBAC -----------------------------------------------------------------------------------------

GROUP_OF = {
    "runnerservices": "kuberunner.io",
    "runnerservices/status": "kuberunner.io",
    "runnerservices/finalizers": "kuberunner.io",
    "deployments": "apps",
    "services": "",
    "horizontalpodautoscalers": "autoscaling",
    "poddisruptionbudgets": "policy",
    "pods": "",
    "replicasets": "apps",
    "events": "",
    "leases": "coordination.k8s.io",
    "namespaces": "",
    "customresourcedefinitions": "apiextensions.k8s.io",
}
CLUSTER_SCOPED = {"namespaces", "customresourcedefinitions"}

Right = tuple[str, str, str]  # (group, resource, verb)


def contract_rights() -> set[Right]:
    """The "API access it needs" list of docs/contracts.md, as (group, resource, verb)."""
    text = CONTRACTS.read_text()
    start = text.index("API access it needs")
    block = text[start : text.index("Never Secrets", start)]
    rights: set[Right] = set()
    for names, verbs in re.findall(r"((?:`[a-z/]+`(?:,\s*)?)+)\s+([a-z]+(?:/[a-z]+)*)", block):
        for resource in re.findall(r"`([a-z/]+)`", names):
            for verb in verbs.split("/"):
                rights.add((GROUP_OF[resource], resource, verb))
    assert len(rights) > 30, f"could not parse the contract's RBAC list: {sorted(rights)}"
    return rights


def rights_of(rules: list[Manifest]) -> set[Right]:
    out: set[Right] = set()
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


def test_contract_list_parses_to_the_expected_size() -> None:
    rights = contract_rights()
    assert ("kuberunner.io", "runnerservices/finalizers", "update") in rights
    assert ("coordination.k8s.io", "leases", "create") in rights
    assert not any(r[1] in {"secrets", "nodes"} for r in rights)


@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
def test_rbac_is_exactly_the_contract_list(mode: str) -> None:
    values = "leaderElection: {enabled: true}\nreplicas: 2\n"
    if mode == "namespaced":
        values += "watchNamespaces: [team-a, team-b]\n"
    docs = template(values)
    sa = one(docs, "ServiceAccount")["metadata"]["name"]
    cluster_rights = rights_of(one(docs, "ClusterRole")["rules"])
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in by_kind(docs, "Role")}
    role_rights = {key: rights_of(r["rules"]) for key, r in roles.items()}
    everything = cluster_rights.union(*role_rights.values())
    assert everything == contract_rights()
    for r in everything:
        assert "*" not in r
    # Cluster-wide rights: scanning only, unless every namespace is watched.
    scanning = {r for r in contract_rights() if r[1] in CLUSTER_SCOPED}
    namespaced = {r for r in contract_rights() if r[1] not in CLUSTER_SCOPED and r[1] != "leases"}
    leases = {r for r in contract_rights() if r[1] == "leases"}
    lease_role = ("kr-system", "t-kuberunner-leader-election")
    if mode == "cluster-wide":
        assert cluster_rights == scanning | namespaced
        assert role_rights == {lease_role: leases}
    else:
        assert cluster_rights == scanning
        assert role_rights == {
            ("team-a", "t-kuberunner-operator"): namespaced,
            ("team-b", "t-kuberunner-operator"): namespaced,
            lease_role: leases,
        }
    # Every role is bound to the operator's ServiceAccount.
    bindings = by_kind(docs, "RoleBinding") + by_kind(docs, "ClusterRoleBinding")
    bound = {
        (b["roleRef"]["kind"], b["roleRef"]["name"], b["metadata"].get("namespace"))
        for b in bindings
    }
    assert ("ClusterRole", "t-kuberunner-operator", None) in bound
    for ns, name in roles:
        assert ("Role", name, ns) in bound
    for b in bindings:
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": "kr-system"}]


def test_no_lease_rights_without_leader_election() -> None:
    docs = template()
    assert by_kind(docs, "Role") == []
    assert not any(r[1] == "leases" for r in rights_of(one(docs, "ClusterRole")["rules"]))


def test_aggregated_roles_are_optional() -> None:
    assert len(by_kind(template(), "ClusterRole")) == 1
    docs = template("rbac: {aggregateToDefaultRoles: true}")
    agg = {
        r["metadata"]["name"]: r
        for r in by_kind(docs, "ClusterRole")
        if r["metadata"]["name"] != "t-kuberunner-operator"
    }
    view = agg["t-kuberunner-runnerservices-view"]
    edit = agg["t-kuberunner-runnerservices-edit"]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert {v for _, _, v in rights_of(view["rules"])} == {"get", "list", "watch"}
    assert ("kuberunner.io", "runnerservices", "create") in rights_of(edit["rules"])


def test_rbac_create_false_renders_no_rbac() -> None:
    docs = template("rbac: {create: false}\nserviceAccount: {create: false, name: my-sa}")
    kinds = {d["kind"] for d in docs}
    assert not kinds & {
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    }
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "my-sa"


# --- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "release"),
    [("", "r" * 53), ("fullnameOverride: " + "f" * 63, "t"), ("nameOverride: " + "n" * 63, "t")],
)
def test_names_and_label_values_fit_in_63_characters(values: str, release: str) -> None:
    extra = "\nleaderElection: {enabled: true}\nmetrics: {podMonitor: {enabled: true}}"
    docs = template(values + extra, release=release)
    for doc in docs:
        name = doc["metadata"]["name"]
        assert len(name) <= 63, name
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name), name
        for value in doc["metadata"].get("labels", {}).values():
            assert len(value) <= 63, value


# --- CRDs -----------------------------------------------------------------------------------------


def repo_crds() -> dict[str, Path]:
    files = {p.name: p for p in sorted((REPO / "crds").glob("*.yaml"))}
    assert files, "crds/ holds no CRD yet (generated by `kuberunner manifest crd`)"
    return files


def test_chart_copy_of_the_crds_equals_crds_dir() -> None:
    chart_copy = {p.name: p for p in sorted((CHART / "files" / "crds").glob("*.yaml"))}
    source = repo_crds()
    assert chart_copy.keys() == source.keys(), "run: bash hack/render-manifests.sh"
    for name, path in source.items():
        assert chart_copy[name].read_bytes() == path.read_bytes(), (
            f"{name}: run hack/render-manifests.sh"
        )


def strip_chart_metadata(crd: Manifest) -> Manifest:
    meta = crd["metadata"]
    for key in ("labels", "annotations"):
        meta.pop(key, None)
    return crd


def test_crds_rendered_with_keep_policy_and_same_content() -> None:
    source = {}
    for path in repo_crds().values():
        for doc in yaml.safe_load_all(path.read_text()):
            source[doc["metadata"]["name"]] = doc
    docs = template()
    rendered = {d["metadata"]["name"]: d for d in by_kind(docs, "CustomResourceDefinition")}
    assert rendered.keys() == source.keys()
    for name, crd in rendered.items():
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["labels"]["app.kubernetes.io/instance"] == "t"
        src_labels = source[name]["metadata"].get("labels", {})
        assert src_labels.items() <= crd["metadata"]["labels"].items()
        assert strip_chart_metadata(crd) == strip_chart_metadata(source[name])


def test_crd_toggles() -> None:
    repo_crds()
    no_keep = by_kind(template("crds: {keep: false}"), "CustomResourceDefinition")
    assert no_keep
    assert all(
        "helm.sh/resource-policy" not in d["metadata"].get("annotations", {}) for d in no_keep
    )
    assert by_kind(template("crds: {install: false}"), "CustomResourceDefinition") == []


def test_plain_manifest_and_chart_crds_are_current() -> None:
    done = subprocess.run(
        ["bash", str(REPO / "hack" / "render-manifests.sh"), "--check"],
        env={"HELM": helm(), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_plain_manifest_is_the_default_render_plus_namespace() -> None:
    docs = [d for d in yaml.safe_load_all((REPO / "deploy" / "kuberunner.yaml").read_text()) if d]
    assert docs[0] == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "kuberunner-system",
            "labels": {
                "app.kubernetes.io/name": "kuberunner",
                "pod-security.kubernetes.io/enforce": "restricted",
            },
        },
    }
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("Deployment") == 1
    assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service"} <= set(kinds)
    assert all(
        d["metadata"].get("namespace", "kuberunner-system") == "kuberunner-system" for d in docs
    )
    kustomization = yaml.safe_load((REPO / "deploy" / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["kuberunner.yaml"]


# --- monitoring -----------------------------------------------------------------------------------

MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


def test_monitoring_objects_are_off_by_default() -> None:
    docs = template()
    assert not {d["kind"] for d in docs} & MONITORING_KINDS
    assert by_kind(docs, "ConfigMap") == []
    # The metrics Service is on: it selects the operator pods by the port named `metrics`.
    svc = one(docs, "Service")
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_service_monitor_selects_the_metrics_service() -> None:
    docs = template((CHART / "ci" / "04-monitoring-values.yaml").read_text())
    sm = one(docs, "ServiceMonitor")
    svc = one(docs, "Service")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["kr-system"]}
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"


def test_pod_monitor_selects_runner_pods() -> None:
    docs = template((CHART / "ci" / "04-monitoring-values.yaml").read_text())
    pm = one(docs, "PodMonitor")
    assert pm["spec"]["selector"] == {
        "matchLabels": {
            "app.kubernetes.io/managed-by": "kuberunner",
            "app.kubernetes.io/component": "runner",
        }
    }
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    endpoint = pm["spec"]["podMetricsEndpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    targets = {r["targetLabel"] for r in endpoint["relabelings"]}
    assert targets == {"kuberunner_service", "kuberunner_runner", "pod_ready"}
    namespaced = template("watchNamespaces: [a, b]\nmetrics: {podMonitor: {enabled: true}}")
    assert one(namespaced, "PodMonitor")["spec"]["namespaceSelector"] == {"matchNames": ["a", "b"]}


def test_dashboard_configmap_ships_the_dashboard_files() -> None:
    docs = template("grafana: {dashboards: {enabled: true}}")
    cm = one(docs, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = sorted(p.name for p in (CHART / "files" / "dashboards").glob("*.json"))
    assert sorted(cm["data"]) == files
    for name in files:
        assert cm["data"][name] == (CHART / "files" / "dashboards" / name).read_text().rstrip("\n")

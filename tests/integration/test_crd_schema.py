"""The generated CRD on a real API server: examples are accepted, bad manifests are refused with
the field path, defaults are applied, `kubectl explain` shows the model descriptions."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8s_helpers import REPO, kubectl, kubectl_json
from kuberunner_dev.cluster import ClusterInfo
from kuberunner_operator.crd import CRD_NAME, CRD_PATH
from kuberunner_operator.render import render_service
from kuberunner_operator.status import Observed, compute_status

pytestmark = pytest.mark.cluster

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def crd(cluster: ClusterInfo) -> None:
    kubectl(
        cluster,
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=kuberunner-tests",
        "-f",
        str(REPO / CRD_PATH),
    )
    kubectl(cluster, "wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")


def good(**runner: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": "r", "runnable": "pkg.mod:Model", "resources": {"cpu": 1}}
    entry.update(runner)
    return {
        "apiVersion": "kuberunner.io/v1alpha1",
        "kind": "RunnerService",
        "metadata": {"name": "probe"},
        "spec": {"image": "img:1", "runners": [entry]},
    }


def apply_text(cluster: ClusterInfo, namespace: str, text: str) -> Any:
    return kubectl(cluster, "apply", "-n", namespace, "-f", "-", input=text, check=False)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_accepted(
    cluster: ClusterInfo, crd: None, fresh_namespace: str, path: Path
) -> None:
    done = apply_text(cluster, fresh_namespace, path.read_text(encoding="utf-8"))
    assert done.returncode == 0, done.stderr
    name = yaml.safe_load(path.read_text(encoding="utf-8"))["metadata"]["name"]
    stored = kubectl_json(cluster, "get", "rsvc", name, "-n", fresh_namespace)
    assert stored["spec"]["runners"]


def test_defaults_and_fractions_are_stored(
    cluster: ClusterInfo, crd: None, fresh_namespace: str
) -> None:
    body = good()
    body["spec"]["runners"].append(
        {
            "name": "g",
            "runnable": "m:G",
            "supportedResources": ["nvidia.com/gpu"],
            "resources": {"nvidia.com/gpu": 4},
            "workersPerResource": 0.5,
            "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        }
    )
    done = apply_text(cluster, fresh_namespace, yaml.safe_dump(body))
    assert done.returncode == 0, done.stderr
    stored = kubectl_json(cluster, "get", "rsvc", "probe", "-n", fresh_namespace)["spec"]
    plain, gpu = stored["runners"]
    assert plain["workersPerResource"] == 1
    assert plain["replicas"] == 1
    assert plain["supportedResources"] == ["cpu"]
    assert plain["supportsCpuMultiThreading"] is False
    assert gpu["workersPerResource"] == 0.5
    assert gpu["env"] == [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]


def _bad(change: Any) -> dict[str, Any]:
    body = good()
    change(body)
    return body


def _runner(**fields: Any) -> Any:
    def change(body: dict[str, Any]) -> None:
        body["spec"]["runners"][0].update(fields)

    return change


def _duplicate(body: dict[str, Any]) -> None:
    body["spec"]["runners"].append(copy.deepcopy(body["spec"]["runners"][0]))


def _no_runners(body: dict[str, Any]) -> None:
    body["spec"]["runners"] = []


BAD = [
    ("duplicate-names", _duplicate, ["spec.runners"]),
    ("no-runners", _no_runners, ["spec.runners"]),
    (
        "min-over-max",
        _runner(autoscaling={"minReplicas": 5, "maxReplicas": 2}),
        ["spec.runners[0].autoscaling.minReplicas", "less than or equal to maxReplicas"],
    ),
    (
        "both-budgets",
        _runner(disruptionBudget={"minAvailable": 1, "maxUnavailable": 1}),
        ["spec.runners[0].disruptionBudget", "exactly one of minAvailable and maxUnavailable"],
    ),
    ("negative-replicas", _runner(replicas=-1), ["spec.runners[0].replicas"]),
    ("bad-runner-name", _runner(name="Bad Name"), ["spec.runners[0].name"]),
    ("long-runner-name", _runner(name="a" * 64), ["spec.runners[0].name"]),
    ("bad-runnable", _runner(runnable="nocolon"), ["spec.runners[0].runnable"]),
    ("bad-quantity", _runner(resources={"cpu": "two"}), ["spec.runners[0].resources.cpu"]),
    ("negative-quantity", _runner(resources={"cpu": "-1"}), ["spec.runners[0].resources.cpu"]),
    ("negative-int-quantity", _runner(resources={"cpu": -1}), ["spec.runners[0].resources.cpu"]),
    ("bad-percent", _runner(disruptionBudget={"maxUnavailable": "x%"}), ["maxUnavailable"]),
    (
        "zero-gpus",
        _runner(resources={"nvidia.com/gpu": 0}),
        ["spec.runners[0].resources.nvidia.com/gpu"],
    ),
    (
        "no-cpu-or-gpu",
        _runner(resources={"memory": "1Gi"}),
        ["spec.runners[0].resources", "resources must set cpu or nvidia.com/gpu"],
    ),
    ("zero-workers", _runner(workersPerResource=0), ["spec.runners[0].workersPerResource"]),
    (
        "unknown-resource-kind",
        _runner(supportedResources=["tpu"]),
        ["spec.runners[0].supportedResources[0]"],
    ),
    ("unknown-field", _runner(bogus=1), ["unknown field", "spec.runners[0].bogus"]),
    (
        "value-and-valueFrom",
        _runner(env=[{"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]),
        ["spec.runners[0].env[0]", "mutually exclusive"],
    ),
    (
        "env-name-not-printable-ascii",
        _runner(env=[{"name": "GR\u00dcSSE", "value": "x"}]),
        ["spec.runners[0].env[0].name"],
    ),
    ("env-name-with-equals", _runner(env=[{"name": "A=B"}]), ["spec.runners[0].env[0].name"]),
    (
        "recreate-with-surge",
        _runner(rollout={"type": "Recreate", "maxSurge": 1}),
        ["spec.runners[0].rollout", "only to RollingUpdate"],
    ),
    (
        "malformed-startup-timeout",
        _runner(startupTimeout="10 minutes"),
        ["spec.runners[0].startupTimeout", "should match"],
    ),
    (
        "startup-timeout-out-of-range",
        _runner(startupTimeout="48h"),
        ["spec.runners[0].startupTimeout", "startupTimeout must be between 10s and 24h"],
    ),
    (
        "progress-deadline-out-of-range",
        _runner(rollout={"progressDeadline": "1s"}),
        ["spec.runners[0].rollout.progressDeadline", "must be between 5s and 24h"],
    ),
    (
        "bad-method-name",
        _runner(methods={"not-ok": {"maxBatchSize": 1}}),
        ["spec.runners[0].methods", "Python identifiers"],
    ),
]


@pytest.mark.parametrize(("case", "change", "needles"), BAD, ids=[b[0] for b in BAD])
def test_bad_manifests_are_refused_with_the_field_path(
    cluster: ClusterInfo,
    crd: None,
    fresh_namespace: str,
    case: str,
    change: Any,
    needles: list[str],
) -> None:
    done = apply_text(cluster, fresh_namespace, yaml.safe_dump(_bad(change)))
    assert done.returncode != 0, f"{case} was accepted"
    for needle in needles:
        assert needle in done.stderr, done.stderr


def test_explain_shows_the_model_descriptions(cluster: ClusterInfo, crd: None) -> None:
    out = kubectl(cluster, "explain", "rsvc.spec.runners.resources").stdout
    assert "scheduling strategy" in out
    assert "nvidia.com/gpu" in out
    assert "Whole GPUs per pod" in out
    out = kubectl(cluster, "explain", "rsvc.spec.runners.workersPerResource").stdout
    assert "0.5 gives each worker two GPUs" in out
    out = kubectl(cluster, "explain", "rsvc.spec.runners.startupTimeout").stdout
    assert "startup probe" in out


def test_printer_columns(cluster: ClusterInfo, crd: None, fresh_namespace: str) -> None:
    done = apply_text(cluster, fresh_namespace, yaml.safe_dump(good()))
    assert done.returncode == 0, done.stderr
    header = kubectl(cluster, "get", "rsvc", "-n", fresh_namespace).stdout.splitlines()[0]
    assert header.split() == ["NAME", "READY", "RUNNERS", "WORKERS", "GPUS", "AGE"]
    wide = kubectl(cluster, "get", "rsvc", "-n", fresh_namespace, "-o", "wide").stdout
    assert wide.splitlines()[0].split()[5:7] == ["REASON", "STATUS"]


def test_computed_status_survives_the_status_schema(
    cluster: ClusterInfo, crd: None, fresh_namespace: str
) -> None:
    """A status from compute_status is stored as is: nothing pruned, columns filled."""
    body = good(
        supportedResources=["nvidia.com/gpu"],
        resources={"nvidia.com/gpu": 2},
        workersPerResource=1,
    )
    body["spec"]["apiServer"] = {"service": "m:svc"}
    assert apply_text(cluster, fresh_namespace, yaml.safe_dump(body)).returncode == 0
    stored = kubectl_json(cluster, "get", "rsvc", "probe", "-n", fresh_namespace)
    rendered = render_service(
        "probe", fresh_namespace, stored["metadata"]["uid"], 1, stored["spec"]
    )
    status, _ = compute_status(rendered, 1, Observed(), None, datetime.now(UTC))
    kubectl(
        cluster,
        "patch",
        "rsvc",
        "probe",
        "-n",
        fresh_namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    again = kubectl_json(cluster, "get", "rsvc", "probe", "-n", fresh_namespace)
    assert again["status"] == status
    row = kubectl(cluster, "get", "rsvc", "probe", "-n", fresh_namespace, "--no-headers").stdout
    assert row.split()[1:5] == ["False", "0/1", "2", "2"]
    wide = kubectl(cluster, "get", "rsvc", "probe", "-n", fresh_namespace, "-o", "wide").stdout
    assert "runner r: pending" in wide


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_rendered_children_are_accepted(
    cluster: ClusterInfo, crd: None, fresh_namespace: str, path: Path
) -> None:
    """Every child render_service makes for an example passes the API server's validation
    (server-side apply as the operator's field manager, not persisted), and its pods meet
    the Pod Security `restricted` profile (the API server warns about workloads that don't)."""
    kubectl(
        cluster,
        "label",
        "namespace",
        fresh_namespace,
        "pod-security.kubernetes.io/warn=restricted",
    )
    text = path.read_text(encoding="utf-8")
    assert apply_text(cluster, fresh_namespace, text).returncode == 0
    name = yaml.safe_load(text)["metadata"]["name"]
    stored = kubectl_json(cluster, "get", "rsvc", name, "-n", fresh_namespace)
    rendered = render_service(name, fresh_namespace, stored["metadata"]["uid"], 1, stored["spec"])
    docs = "\n---\n".join(yaml.safe_dump(o) for o in rendered.objects)
    done = kubectl(
        cluster,
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=kuberunner",
        "-f",
        "-",
        input=docs,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("serverside-applied") == len(rendered.objects)
    assert "PodSecurity" not in done.stderr, done.stderr


def test_pod_security_warning_is_observable(
    cluster: ClusterInfo, crd: None, fresh_namespace: str
) -> None:
    """Control for the check above: a user override that breaks `restricted` is warned about."""
    kubectl(
        cluster, "label", "namespace", fresh_namespace, "pod-security.kubernetes.io/warn=restricted"
    )
    body = good()
    body["spec"]["podTemplate"] = {"securityContext": {"runAsNonRoot": False}}
    rendered = render_service("probe", fresh_namespace, "uid", 1, body["spec"])
    (deployment,) = [o for o in rendered.objects if o["kind"] == "Deployment"]
    deployment["metadata"].pop("ownerReferences")
    done = kubectl(
        cluster,
        "apply",
        "--server-side",
        "--dry-run=server",
        "-f",
        "-",
        input=yaml.safe_dump(deployment),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "PodSecurity" in done.stderr

"""Rendered chart manifests validated by kubeconform `-strict` against Kubernetes 1.36 schemas.

No schema is downloaded: hack/k8s_json_schemas.py converts the local API server's OpenAPI v2
(the dev cluster runs v1.36) into kubeconform's schema layout, cached under
~/.cache/kuberunner/kubeconform-schemas/<server version>-<converter hash>/, and converts the
chart's RunnerService CRD into a schema of its own. The monitoring.coreos.com kinds
(ServiceMonitor, PodMonitor, PrometheusRule) are skipped: their CRDs are not available offline;
tests/unit/chart checks their fields instead.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8s_helpers import kubectl, kubectl_path
from kuberunner_dev.cluster import ClusterInfo
from kuberunner_dev.cluster.binaries import locate

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kuberunner"
CONVERTER = REPO / "hack" / "k8s_json_schemas.py"
LAYOUT = "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"
SKIPPED = ("ServiceMonitor", "PodMonitor", "PrometheusRule")


@functools.cache
def tool(name: str) -> str:
    return str(locate((name,))[name])


@pytest.fixture(scope="module")
def schema_locations(cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    version = json.loads(kubectl(cluster, "version", "-o", "json").stdout)["serverVersion"]
    assert version["minor"] == "36", version
    # Keyed by server version and converter content, so a changed converter regenerates.
    digest = hashlib.sha256(CONVERTER.read_bytes()).hexdigest()[:12]
    cache = Path.home() / ".cache" / "kuberunner" / "kubeconform-schemas"
    cache = cache / f"{version['gitVersion']}-{digest}"
    if not (cache / ".complete").exists():
        subprocess.run(
            [sys.executable, str(CONVERTER), "builtin", "--kubectl", str(kubectl_path()),
             "--kubeconfig", str(cluster.kubeconfig), "--out", str(cache)],
            check=True, timeout=300,
        )  # fmt: skip
        (cache / ".complete").write_text("")
    crds = tmp_path_factory.mktemp("crd-schemas")
    subprocess.run(
        [sys.executable, str(CONVERTER), "crd", "--out", str(crds),
         *map(str, sorted((CHART / "files" / "crds").glob("*.yaml")))],
        check=True, timeout=60,
    )  # fmt: skip
    return [f"{cache}/{LAYOUT}", f"{crds}/{LAYOUT}"]


def kubeconform(locations: list[str], manifests: str) -> dict[str, Any]:
    args = [tool("kubeconform"), "-strict", "-summary", "-output", "json"]
    args += ["-kubernetes-version", "1.36.2", "-skip", ",".join(SKIPPED)]
    for loc in locations:
        args += ["-schema-location", loc]
    done = subprocess.run(
        [*args, "-"], input=manifests, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "HOME": str(Path.home())},
    )  # fmt: skip
    report: dict[str, Any] = json.loads(done.stdout)
    report["returncode"] = done.returncode
    return report


def render(*args: str) -> str:
    done = subprocess.run(
        [tool("helm"), "template", "kuberunner", str(CHART), "--namespace", "kuberunner-system",
         "--kube-version", "1.36.2", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def kinds(manifests: str) -> list[str]:
    return [d["kind"] for d in yaml.safe_load_all(manifests) if d]


def assert_all_valid(report: dict[str, Any], manifests: str) -> None:
    problems = [r for r in report.get("resources", []) if r["status"] != "statusSkipped"]
    assert report["returncode"] == 0, problems
    found = kinds(manifests)
    skipped = sum(k in SKIPPED for k in found)
    assert report["summary"] == {
        "valid": len(found) - skipped,
        "invalid": 0,
        "errors": 0,
        "skipped": skipped,
    }


@pytest.mark.parametrize(
    "values",
    sorted((CHART / "ci").glob("*-values.yaml")),
    ids=lambda p: p.name,
)
def test_ci_values_render_valid_manifests(schema_locations: list[str], values: Path) -> None:
    manifests = render("-f", str(values))
    assert_all_valid(kubeconform(schema_locations, manifests), manifests)


def test_plain_manifest_is_valid(schema_locations: list[str]) -> None:
    manifests = (REPO / "deploy" / "kuberunner.yaml").read_text()
    assert "CustomResourceDefinition" in kinds(manifests)
    assert_all_valid(kubeconform(schema_locations, manifests), manifests)


def test_strict_validation_rejects_unknown_fields(schema_locations: list[str]) -> None:
    """The generated schemas are closed: a misspelt field fails, in built-in and custom kinds."""
    docs = [d for d in yaml.safe_load_all(render()) if d and d["kind"] == "Deployment"]
    container = docs[0]["spec"]["template"]["spec"]["containers"][0]
    container["imagePullPolcy"] = "Always"
    report = kubeconform(schema_locations, yaml.safe_dump(docs[0]))
    assert report["summary"]["invalid"] == 1
    assert "imagePullPolcy" in json.dumps(report["resources"])

    bad_service = {
        "apiVersion": "kuberunner.io/v1alpha1",
        "kind": "RunnerService",
        "metadata": {"name": "x"},
        "spec": {"runnerz": []},
    }
    report = kubeconform(schema_locations, yaml.safe_dump(bad_service))
    assert report["summary"]["invalid"] == 1
    assert "runnerz" in json.dumps(report["resources"])


def test_examples_are_valid_runner_services(schema_locations: list[str]) -> None:
    examples = sorted((REPO / "examples").glob("**/*.yaml"))
    services = [
        p.read_text()
        for p in examples
        if any(d and d.get("kind") == "RunnerService" for d in yaml.safe_load_all(p.read_text()))
    ]
    if not services:
        pytest.fail("examples/ holds no RunnerService manifest yet")
    manifests = "\n---\n".join(services)
    assert_all_valid(kubeconform(schema_locations, manifests), manifests)

"""The checked-in CRD and reference page are current, and the CRD schema is structural."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kuberunner.cli import main
from kuberunner_operator.crd import CRD_PATH, DOCS_PATH, build_crd, render_crd_docs, render_crd_yaml
from kuberunner_operator.models import RunnerServiceSpec
from kuberunner_operator.render import render_service

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_checked_in_crd_is_current() -> None:
    checked_in = (ROOT / CRD_PATH).read_text(encoding="utf-8")
    assert checked_in == render_crd_yaml(), (
        f"{CRD_PATH} is stale: run `kuberunner manifest crd -o {CRD_PATH}`"
    )


def test_checked_in_reference_is_current() -> None:
    checked_in = (ROOT / DOCS_PATH).read_text(encoding="utf-8")
    assert checked_in == render_crd_docs(), (
        f"{DOCS_PATH} is stale: run `kuberunner manifest crd-docs -o {DOCS_PATH}`"
    )


@pytest.mark.parametrize(("target", "path"), [("crd", CRD_PATH), ("crd-docs", DOCS_PATH)])
def test_cli_writes_the_same_files(tmp_path: Path, target: str, path: str) -> None:
    out = tmp_path / "out"
    assert main(["manifest", target, "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == (ROOT / path).read_text(encoding="utf-8")


def nodes(schema: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(schema, dict):
        return
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}.*")


def root_schema() -> dict[str, Any]:
    (version,) = build_crd()["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def test_schema_is_structural() -> None:
    for path, node in nodes(root_schema()):
        for forbidden in ("$ref", "$defs", "title", "allOf", "const"):
            assert forbidden not in node, f"{path} has {forbidden}"
        assert node.get("additionalProperties") not in (True, False), path
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            continue
        assert "anyOf" not in node, path
        assert "type" in node, f"{path} has no type"
        if node.get("x-kubernetes-preserve-unknown-fields"):
            assert node["type"] == "object", path
        named = path.startswith((".spec", ".status")) and not path.endswith(("[]", ".*"))
        if named and path.count(".") > 1:
            assert node.get("description"), f"{path} has no description"
        if isinstance(node.get("exclusiveMinimum"), bool):
            assert "minimum" in node, path


def test_schema_carries_the_api_rules() -> None:
    spec = root_schema()["properties"]["spec"]
    runners = spec["properties"]["runners"]
    assert runners["minItems"] == 1
    assert runners["x-kubernetes-list-map-keys"] == ["name"]
    assert "lowerAscii" in runners["x-kubernetes-validations"][0]["rule"]
    runner = runners["items"]["properties"]
    assert runner["workersPerResource"] == {
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": True,
        "default": 1,
        "description": runner["workersPerResource"]["description"],
    }
    resources = runner["resources"]
    assert resources["properties"]["nvidia.com/gpu"]["minimum"] == 1
    assert "nvidia__dot__com__slash__gpu" in resources["x-kubernetes-validations"][0]["rule"]
    assert "valueFrom" in spec["properties"]["env"]["items"]["properties"]
    assert runner["autoscaling"]["x-kubernetes-validations"][0]["rule"] == (
        "self.minReplicas <= self.maxReplicas"
    )


def test_crd_names_columns_and_subresources() -> None:
    crd = build_crd()
    assert crd["metadata"]["name"] == "runnerservices.kuberunner.io"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "RunnerService",
        "runnerservices",
        ["rsvc"],
    )
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert list(columns) == ["Ready", "Runners", "Workers", "GPUs", "Reason", "Status", "Age"]
    assert columns["Reason"]["priority"] == 1
    assert columns["Status"] == {**columns["Status"], "jsonPath": ".status.summary", "priority": 1}
    status = root_schema()["properties"]["status"]["properties"]
    for column in ("readyRunners", "workers", "gpus", "conditions"):
        assert column in status


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid_and_render(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#"), "every example starts with a comment saying what it shows"
    body = yaml.safe_load(text)
    assert body["apiVersion"] == "kuberunner.io/v1alpha1"
    spec = RunnerServiceSpec.model_validate(body["spec"])
    rendered = render_service(body["metadata"]["name"], "default", "uid", 1, spec)
    assert all(plan.invalid is None for plan in rendered.components)
    assert rendered.objects


def test_examples_cover_the_documented_cases() -> None:
    specs = [yaml.safe_load(p.read_text(encoding="utf-8"))["spec"] for p in EXAMPLES]
    runners = [r for s in specs for r in s["runners"]]
    assert any(
        r.get("workersPerResource") == 0.5 and "nvidia.com/gpu" in r["resources"] for r in runners
    )
    assert any("autoscaling" in r for r in runners)
    assert any("apiServer" in s and len(s["runners"]) > 1 for s in specs)
    assert any("nvidia.com/gpu" not in r["resources"] for r in runners)

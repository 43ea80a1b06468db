"""hack/k8s_json_schemas.py: OpenAPI v2 / CRD schemas to strict kubeconform schemas."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "hack" / "k8s_json_schemas.py"


@pytest.fixture(scope="module")
def conv() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_json_schemas", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_objects_are_closed_unless_they_preserve_unknown_fields(conv: ModuleType) -> None:
    out = conv.strictify(
        {
            "type": "object",
            "properties": {
                "a": {"type": "string", "format": "date-time", "nullable": True},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                         "properties": {"x": {"type": "string"}}},
                "map": {"type": "object", "additionalProperties": {"type": "string"}},
                "port": {"x-kubernetes-int-or-string": True,
                         "anyOf": [{"type": "integer"}, {"type": "string"}]},
            },
        }
    )  # fmt: skip
    assert out["additionalProperties"] is False
    props = out["properties"]
    assert props["a"] == {"type": ["string", "null"]}
    assert "additionalProperties" not in props["free"]
    assert props["map"]["additionalProperties"] == {"type": "string"}
    assert props["port"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert "type" not in props["port"]


def test_builtin_kinds_carry_only_the_definitions_they_reach(conv: ModuleType) -> None:
    openapi = {
        "definitions": {
            "io.k8s.api.apps.v1.Deployment": {
                "type": "object",
                "properties": {
                    "spec": {"$ref": "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"},
                },
                "x-kubernetes-group-version-kind": [
                    {"group": "apps", "version": "v1", "kind": "Deployment"}
                ],
            },
            "io.k8s.api.apps.v1.DeploymentSpec": {
                "type": "object",
                "properties": {
                    "maxSurge": {
                        "$ref": "#/definitions/io.k8s.apimachinery.pkg.util.intstr.IntOrString"
                    },
                },
            },
            "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {
                "type": "string",
                "format": "int-or-string",
            },
            "io.k8s.api.core.v1.Unrelated": {"type": "object", "properties": {}},
        }
    }
    ((group, version, kind, schema),) = list(conv.builtin_schemas(openapi))
    assert (group, version, kind) == ("apps", "v1", "Deployment")
    assert sorted(schema["definitions"]) == [
        "io.k8s.api.apps.v1.Deployment",
        "io.k8s.api.apps.v1.DeploymentSpec",
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
    ]
    assert schema["definitions"]["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] == {
        "oneOf": [{"type": "string"}, {"type": "integer"}]
    }
    assert (
        schema["definitions"]["io.k8s.api.apps.v1.DeploymentSpec"]["additionalProperties"] is False
    )
    # kubeconform's template for apps/v1 resolves "{{ .Group }}" to "apps", for v1 to "v1".
    assert conv.schema_path(Path("/s"), "apps", "v1", "Deployment") == Path(
        "/s/apps/deployment_v1.json"
    )
    assert conv.schema_path(Path("/s"), "", "v1", "Service") == Path("/s/v1/service_v1.json")


def test_crd_cli_writes_one_schema_per_served_version(tmp_path: Path) -> None:
    crd: dict[str, Any] = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.example.io"},
        "spec": {
            "group": "example.io",
            "names": {"kind": "Thing", "plural": "things"},
            "scope": "Namespaced",
            "versions": [
                {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {"type": "object",
                                            "properties": {"n": {"type": "integer"}}}},
                }}},
                {"name": "v0", "served": False, "storage": False, "schema": {"openAPIV3Schema": {
                    "type": "object"}}},
            ],
        },
    }  # fmt: skip
    (tmp_path / "crd.yaml").write_text(yaml.safe_dump(crd))
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "crd", "--out", str(tmp_path / "out"),
         str(tmp_path / "crd.yaml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.json")
    )
    assert written == ["example.io/thing_v1.json"]
    schema = json.loads((tmp_path / "out" / "example.io" / "thing_v1.json").read_text())
    assert schema["additionalProperties"] is False
    assert schema["properties"]["spec"]["additionalProperties"] is False
    assert {"apiVersion", "kind", "metadata", "spec"} == set(schema["properties"])

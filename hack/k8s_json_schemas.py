"""Write kubeconform JSON schemas from a live API server's OpenAPI v2 and from CRD files.

No schema is downloaded: the built-in kinds come from `GET /openapi/v2` of the API server that
kubectl's kubeconfig points at (e.g. the local dev cluster, Kubernetes 1.36), the custom kinds
from the `openAPIV3Schema` of CRD YAML files. Each kind is written as one self-contained file
in the layout of the kubeconform schema-location template `LAYOUT` below; every object schema
that lists properties gets `additionalProperties: false`, which is what `kubeconform -strict`
expects of its `-strict` schema sets.

    python hack/k8s_json_schemas.py builtin --kubectl KUBECTL --kubeconfig FILE --out DIR
    python hack/k8s_json_schemas.py crd --out DIR crds/*.yaml
    kubeconform -strict -schema-location "DIR/$LAYOUT" ...
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

# kubeconform template: .Group is the part of apiVersion before "/" ("v1" for the core group).
LAYOUT = "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"

Schema = dict[str, Any]

# OpenAPI v2 definitions whose JSON form is not their declared `type: string`.
_INT_OR_STRING: Schema = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
_QUANTITY: Schema = {"oneOf": [{"type": "string"}, {"type": "number"}]}
_SPECIAL = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": _INT_OR_STRING,
    "io.k8s.apimachinery.pkg.api.resource.Quantity": _QUANTITY,
}


def schema_path(out: Path, group: str, version: str, kind: str) -> Path:
    """Where LAYOUT makes kubeconform look for group/version/kind."""
    return out / (group or version) / f"{kind.lower()}_{version}.json"


def strictify(node: Any) -> Any:
    """A copy of a schema: closed objects, int-or-string and nullable made explicit,
    formats dropped (kubeconform would check some of them against rules of its own)."""
    if isinstance(node, list):
        return [strictify(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: Schema = {}
    for key, value in node.items():
        if key == "format":
            continue
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {name: strictify(sub) for name, sub in value.items()}
        else:
            out[key] = strictify(value)
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out.setdefault("oneOf", _INT_OR_STRING["oneOf"])
    preserve = out.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            yield ref.removeprefix("#/definitions/")
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def builtin_schemas(openapi: Schema) -> Iterator[tuple[str, str, str, Schema]]:
    """(group, version, kind, schema) for every kind in an OpenAPI v2 document; each schema
    carries the definitions it reaches under `definitions`."""
    definitions: dict[str, Schema] = {
        name: _SPECIAL.get(name) or strictify(body)
        for name, body in openapi.get("definitions", {}).items()
    }
    for name, body in openapi.get("definitions", {}).items():
        for gvk in body.get("x-kubernetes-group-version-kind", []):
            reached: dict[str, Schema] = {}
            todo = [name]
            while todo:
                current = todo.pop()
                if current in reached or current not in definitions:
                    continue
                reached[current] = definitions[current]
                todo.extend(_refs(definitions[current]))
            schema: Schema = {**definitions[name], "definitions": reached}
            yield gvk.get("group", ""), gvk["version"], gvk["kind"], schema


def crd_schemas(documents: Iterable[Any]) -> Iterator[tuple[str, str, str, Schema]]:
    """(group, version, kind, schema) for every served version of every CRD document."""
    for doc in documents:
        if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            raw = version.get("schema", {}).get("openAPIV3Schema")
            if raw is None:
                raise ValueError(f"{doc['metadata']['name']} {version['name']}: no openAPIV3Schema")
            schema = strictify(raw)
            # The API server adds these to every custom resource; CRDs need not declare them.
            props = schema.setdefault("properties", {})
            props.setdefault("apiVersion", {"type": "string"})
            props.setdefault("kind", {"type": "string"})
            props.setdefault("metadata", {"type": "object"})
            yield spec["group"], version["name"], spec["names"]["kind"], schema


def write(out: Path, schemas: Iterable[tuple[str, str, str, Schema]]) -> int:
    count = 0
    for group, version, kind, schema in schemas:
        path = schema_path(out, group, version, kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(schema, sort_keys=True))
        tmp.replace(path)
        count += 1
    return count


def fetch_openapi(kubectl: str, kubeconfig: str) -> Schema:
    done = subprocess.run(
        [kubectl, f"--kubeconfig={kubeconfig}", "get", "--raw", "/openapi/v2"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"kubectl get --raw /openapi/v2 failed: {done.stderr.strip()}")
    document: Schema = json.loads(done.stdout)
    return document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="source", required=True)
    builtin = sub.add_parser("builtin", help="kinds served by an API server (OpenAPI v2)")
    builtin.add_argument("--kubectl", default="kubectl")
    builtin.add_argument("--kubeconfig", required=True)
    builtin.add_argument("--out", type=Path, required=True)
    crd = sub.add_parser("crd", help="kinds defined by CRD YAML files")
    crd.add_argument("--out", type=Path, required=True)
    crd.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.source == "builtin":
        count = write(args.out, builtin_schemas(fetch_openapi(args.kubectl, args.kubeconfig)))
    else:
        docs = [doc for f in args.files for doc in yaml.safe_load_all(f.read_text())]
        count = write(args.out, crd_schemas(docs))
    print(f"k8s_json_schemas: wrote {count} schemas under {args.out}", file=sys.stderr)
    return 0 if count else 1


if __name__ == "__main__":
    sys.exit(main())

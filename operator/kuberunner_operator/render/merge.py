"""Merging a runner's (or the API server's) env and podTemplate over the service's.

The rule, documented on `PodTemplate`: field by field, never a wholesale replacement (Yatai
replaced the service's settings with the runner's, yatai-deployment#136).
- maps (labels, annotations, nodeSelector, requests, limits): union, the inner value wins;
- env and volumes: by `name`; volumeMounts: by `mountPath`; tolerations: by (key, effect).
  An inner entry replaces the outer one in place; new entries are appended in order;
- securityContext and affinity: recursive merge of objects, inner leaves and lists win;
- scalars (serviceAccountName): the inner value wins when set.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

from kuberunner.merging import deep_merge
from kuberunner_operator.models import EnvVar, PodTemplate

Obj = dict[str, Any]


def merge_by_key(
    outer: Iterable[Obj], inner: Iterable[Obj], key: Callable[[Obj], Hashable]
) -> list[Obj]:
    """Outer entries in order (replaced in place by inner ones with the same key), then the
    inner entries with new keys, in order."""
    merged: dict[Hashable, Obj] = {}
    for item in outer:
        merged[key(item)] = item
    for item in inner:
        merged[key(item)] = item
    return list(merged.values())


def _dump_env(env: Iterable[EnvVar]) -> list[Obj]:
    return [e.model_dump(by_alias=True, exclude_none=True) for e in env]


def merge_env(outer: Iterable[EnvVar], inner: Iterable[EnvVar]) -> list[Obj]:
    """Env of a component as container `env` entries (valueFrom kept intact)."""
    return merge_by_key(_dump_env(outer), _dump_env(inner), lambda e: e["name"])


def _dump(template: PodTemplate | None) -> Obj:
    if template is None:
        return {}
    return template.model_dump(by_alias=True, exclude_none=True)


def _toleration_key(item: Obj) -> Hashable:
    return (item.get("key"), item.get("effect"))


_MAPS = ("labels", "annotations", "nodeSelector")
_KEYED_LISTS: dict[str, Callable[[Obj], Hashable]] = {
    "tolerations": _toleration_key,
    "volumes": lambda v: v["name"],
    "volumeMounts": lambda m: m["mountPath"],
}
_OBJECTS = ("affinity", "securityContext")


def merge_pod_templates(outer: PodTemplate | None, inner: PodTemplate | None) -> PodTemplate:
    """`inner` merged over `outer` by the rule of the module docstring."""
    a, b = _dump(outer), _dump(inner)
    merged: Obj = {}
    for name in _MAPS:
        merged[name] = {**a.get(name, {}), **b.get(name, {})}
    for name, key in _KEYED_LISTS.items():
        merged[name] = merge_by_key(a.get(name, []), b.get(name, []), key)
    for name in _OBJECTS:
        if name in a or name in b:
            merged[name] = deep_merge(a.get(name, {}), b.get(name, {}))
    if "serviceAccountName" in a or "serviceAccountName" in b:
        merged["serviceAccountName"] = b.get("serviceAccountName", a.get("serviceAccountName"))
    if "resources" in a or "resources" in b:
        ra, rb = a.get("resources", {}), b.get("resources", {})
        merged["resources"] = {
            part: {**ra.get(part, {}), **rb.get(part, {})} for part in ("requests", "limits")
        }
    return PodTemplate.model_validate(merged)

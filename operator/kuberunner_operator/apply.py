"""Writing a service's children: server-side apply in waves, repair of hand-edited pod
templates, and pruning of children the spec no longer names."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from kuberunner_operator.cache import ServiceKey, ServiceState
from kuberunner_operator.kinds import DEPLOYMENT, LATE_KINDS, child_kind
from kuberunner_operator.kube import ApiError
from kuberunner_operator.render import Rendered
from kuberunner_operator.runtime import Runtime

log = logging.getLogger("kuberunner.operator")

# 4xx answers to an apply that are not about the object itself: retried as errors.
_NOT_REFUSALS = {401, 403, 404, 408, 409, 429}
# Template annotations that tools write on purpose (`kubectl rollout restart`): kept on repair.
_KEPT_TEMPLATE_ANNOTATIONS = ("kubectl.kubernetes.io/restartedAt",)


def is_refusal(exc: ApiError) -> bool:
    """An answer saying the object itself is unacceptable (422 invalid, 413 too large, 400)."""
    return 400 <= exc.code < 500 and exc.code not in _NOT_REFUSALS


def waves(objects: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Workloads and Services first, then what refers to them (HPA, PDB)."""
    first = [o for o in objects if o["kind"] not in LATE_KINDS]
    late = [o for o in objects if o["kind"] in LATE_KINDS]
    return [wave for wave in (first, late) if wave]


async def apply_children(rt: Runtime, key: ServiceKey, objects: list[dict[str, Any]]) -> None:
    """Apply every object; the ones the API server refuses are recorded in `refused` (the
    status reports them) instead of failing the pass, so that the others are still applied."""
    refused: dict[str, str] = {}

    async def one(obj: dict[str, Any]) -> None:
        try:
            live = await rt.kube.apply(obj)
        except ApiError as exc:
            if not is_refusal(exc):
                raise
            name = obj["metadata"]["name"]
            message = f"{obj['kind']} {name} refused by the API server: {exc.code} {exc.reason}"
            if exc.message:
                message += f": {exc.message[:512]}"
            refused.setdefault(name, message)
            log.warning("apply %s/%s: %s", key[0], name, message)
            return
        live.setdefault("kind", obj["kind"])
        rt.cache.record_applied(key, live)

    # Objects of one wave are independent: apply them concurrently (one round trip per wave).
    for wave in waves(objects):
        await asyncio.gather(*(one(o) for o in wave))
    rt.cache.state(key).refused = refused


async def replace_edited_templates(
    rt: Runtime, key: ServiceKey, st: ServiceState, objects: list[dict[str, Any]]
) -> None:
    """Undo hand edits of a Deployment's pod template (an added env var, say) that server-side
    apply leaves alone because another field manager owns them. Replicas are never touched."""
    edited, st.edited = st.edited, set()
    for obj in objects:
        ckey = (obj["kind"], obj["metadata"]["name"])
        if obj["kind"] != DEPLOYMENT.kind or ckey not in edited:
            continue
        template = json.loads(json.dumps(obj["spec"]["template"]))
        live = st.children.get(ckey) or {}
        live_annotations = (
            ((live.get("spec") or {}).get("template") or {}).get("metadata") or {}
        ).get("annotations") or {}
        for name in _KEPT_TEMPLATE_ANNOTATIONS:
            if name in live_annotations:
                template.setdefault("metadata", {}).setdefault("annotations", {})[name] = (
                    live_annotations[name]
                )
        result = await rt.kube.json_patch(
            obj["apiVersion"],
            obj["kind"],
            ckey[1],
            key[0],
            [{"op": "replace", "path": "/spec/template", "value": template}],
        )
        result.setdefault("kind", obj["kind"])
        rt.cache.record_applied(key, result)
        log.info("restored the pod template of Deployment %s/%s", key[0], ckey[1])


async def prune(
    rt: Runtime, key: ServiceKey, st: ServiceState, rendered: Rendered, uid: str
) -> None:
    """Delete children of runners no longer in the spec (an invalid runner keeps its last good
    objects: a typo must not take a serving runner down)."""
    wanted = {(o["kind"], o["metadata"]["name"]) for o in rendered.objects}
    keep_names = {plan.object_name for plan in rendered.components if plan.invalid}
    for (kind, child_name), child in list(st.children.items()):
        if (kind, child_name) in wanted or child_name in keep_names:
            continue
        owners = (child.get("metadata") or {}).get("ownerReferences") or []
        if not any(ref.get("uid") == uid for ref in owners):
            continue
        api_version = str(child.get("apiVersion") or child_kind(kind).api_version)
        if await rt.kube.delete(api_version, kind, child_name, key[0]):
            log.info("pruned %s %s/%s", kind, key[0], child_name)
        rt.cache.forget_child(key, (kind, child_name))

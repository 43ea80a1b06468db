"""The one level-based reconcile of a RunnerService.

Validate the spec, render the children (pure), apply them with server-side apply, prune what
the spec no longer names, and write only `status` (pure `compute_status`), as a merge patch of
what changed, with an Event per transition.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from kuberunner_operator.apply import apply_children, prune, replace_edited_templates
from kuberunner_operator.cache import ServiceKey, ServiceState
from kuberunner_operator.events import post_event
from kuberunner_operator.kinds import DEPLOYMENT, HPA, RUNNER_SERVICE
from kuberunner_operator.models import RunnerServiceSpec
from kuberunner_operator.render import Rendered, render_service
from kuberunner_operator.runtime import Runtime
from kuberunner_operator.status import Observed, compute_status, invalid_spec_status

INVALID = "invalid"  # reconcile result: spec rejected by the models, reported in status
REFUSED = "refused"  # reconcile result: the API server refused a child, reported in status

JSON = dict[str, Any]


def generation_of(body: Mapping[str, Any]) -> int:
    return int((body.get("metadata") or {}).get("generation") or 0)


def digest(objects: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(objects, sort_keys=True).encode()).hexdigest()


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> JSON:
    """The smallest JSON merge patch turning `old` into `new` (RFC 7386); {} when equal."""
    patch: JSON = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif key not in old or before != value:
            patch[key] = value
    return patch


def validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"spec.{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts)


def observed_state(rt: Runtime, key: ServiceKey, st: ServiceState) -> Observed:
    def children_of(kind: str) -> dict[str, JSON]:
        return {name: child for (k, name), child in st.children.items() if k == kind}

    return Observed(
        deployments=children_of(DEPLOYMENT.kind),
        pods=rt.cache.pods_of(key),
        hpas=children_of(HPA.kind),
        refused=dict(st.refused),
    )


async def reconcile(rt: Runtime, key: ServiceKey) -> str:
    """Converge one RunnerService; returns "success", INVALID or REFUSED (exceptions mean
    retry)."""
    st = rt.cache.services.get(key)
    body = st.body if st is not None else None
    if st is None or body is None or body["metadata"].get("deletionTimestamp"):
        return "success"  # gone or going: the garbage collector removes the children
    namespace, name = key
    meta = body["metadata"]
    generation = generation_of(body)
    previous: dict[str, Any] = dict(body.get("status") or {})
    now = datetime.now(UTC)

    uid = str(meta["uid"])
    if st.rendered_for == (uid, generation) and not st.drift:
        # A status refresh: the spec is unchanged, so are the plans; skip validate and render.
        rendered: Rendered = st.rendered
    else:
        try:
            spec = RunnerServiceSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            status, events = invalid_spec_status(generation, validation_message(exc), previous, now)
            await write_status(rt, st, key, previous, status, events)
            return INVALID  # terminal until the spec changes (that event queues it again)
        rendered = render_service(name, namespace, uid, generation, spec)
        wanted = digest(rendered.objects)
        if st.drift or wanted != st.applied_hash:
            st.drift = False  # cleared first: drift seen while applying triggers another pass
            try:
                await apply_children(rt, key, rendered.objects)
                await replace_edited_templates(rt, key, st, rendered.objects)
                await prune(rt, key, st, rendered, uid)
            except BaseException:
                st.drift = True
                raise
            if st.refused:
                st.drift = True  # applied again on the next pass (after the backoff)
            else:
                st.applied_hash = wanted
            st.applied_at = time.monotonic()
            st.resync_after = rt.config.resync_delay()
        # Keep only the plans: the manifests are re-rendered when applying again.
        st.rendered_for, st.rendered = (uid, generation), dataclasses.replace(rendered, objects=[])

    status, events = compute_status(
        rendered, generation, observed_state(rt, key, st), previous, now
    )
    await write_status(rt, st, key, previous, status, events)
    return REFUSED if st.refused else "success"


async def write_status(
    rt: Runtime,
    st: ServiceState,
    key: ServiceKey,
    previous: dict[str, Any],
    status: dict[str, Any],
    events: Sequence[tuple[str, str, str]],
) -> None:
    """Patch only what changed (nothing at all when nothing did), then post the events."""
    patch = merge_patch(previous, status)
    if patch:
        live = await rt.kube.patch_status(
            RUNNER_SERVICE.api_version, RUNNER_SERVICE.kind, key[1], key[0], patch
        )
        if st.body is not None:  # the watch echo may lag; the next pass diffs against this
            st.body["status"] = live.get("status") or status
    for type_, reason, message in events:
        if st.body is not None:
            await post_event(rt.kube, st.body, type_, reason, message, rt.config.identity)

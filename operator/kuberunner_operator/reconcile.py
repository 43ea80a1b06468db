"""The one level-based reconcile of a RunnerService.

Validate the spec, render the children (pure), apply them with server-side apply, prune what
the spec no longer names, and write only `status` (pure `compute_status`), as a merge patch of
what changed, with an Event per transition.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from kuberunner_operator import naming
from kuberunner_operator.apply import apply_children, prune, replace_edited_templates
from kuberunner_operator.cache import ServiceKey, ServiceState, child_key, content_digest
from kuberunner_operator.events import post_event
from kuberunner_operator.kinds import DEPLOYMENT, HPA, RUNNER_SERVICE
from kuberunner_operator.metrics import RESYNC_TOTAL, ROLLOUT_STALLED, RUNNER_STARTUP
from kuberunner_operator.models import RolledBackStatus, RunnerServiceSpec
from kuberunner_operator.render import Rendered, render_service
from kuberunner_operator.rollout import fetch_readyz, held_deployments, readyz_targets, roll_back
from kuberunner_operator.runtime import Runtime
from kuberunner_operator.startup import ELAPSED_STEP, parse_time, startup_phases
from kuberunner_operator.status import (
    READINESS_FAILING,
    STARTING,
    Observed,
    compute_status,
    invalid_spec_status,
)
from kuberunner_operator.status import (
    ROLLOUT_STALLED as STALLED_REASON,
)

# While a runner starts (or fails readiness), its status is refreshed this often: the elapsed
# time and the /readyz answer change without any pod event.
STARTING_REFRESH = 10.0
# Only pods that became ready after the operator started go into the startup histogram.
_STARTED_AT = datetime.now(UTC)

INVALID = "invalid"  # reconcile result: spec rejected by the models, reported in status
REFUSED = "refused"  # reconcile result: the API server refused a child, reported in status

JSON = dict[str, Any]


def generation_of(body: Mapping[str, Any]) -> int:
    return int((body.get("metadata") or {}).get("generation") or 0)


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
    planned = st.rendered_for == (uid, generation) and not st.drift
    if planned and st.resync and st.applied_hash is not None and st.as_applied(st.applied_keys):
        # A resync that finds every child as the last apply left it: the spec is unchanged, so
        # rendering again would give the same objects; nothing to validate, render or write.
        st.resync = False
        RESYNC_TOTAL.labels(outcome="unchanged").inc()
        _checked(rt, st)
    if planned and not st.resync:
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
        held = held_deployments(rendered, previous, generation)
        objects = [
            o
            for o in rendered.objects
            if not (
                o["kind"] == DEPLOYMENT.kind
                and o["metadata"]["name"] in held
                and child_key(o) in st.children
            )
        ]
        wanted = content_digest(objects)
        resync, st.resync = st.resync, False
        intact = wanted == st.applied_hash and st.as_applied([child_key(o) for o in objects])
        if resync:
            RESYNC_TOTAL.labels(outcome="unchanged" if intact and not st.drift else "applied").inc()
        if st.drift or not intact:
            st.drift = False  # cleared first: drift seen while applying triggers another pass
            try:
                await apply_children(rt, key, objects)
                await replace_edited_templates(rt, key, st, objects)
                await prune(rt, key, st, rendered, uid)
            except BaseException:
                st.drift = True
                raise
            if st.refused:
                st.drift = True  # applied again on the next pass (after the backoff)
            else:
                st.applied_hash = wanted
                st.applied_keys = [child_key(o) for o in objects]
        _checked(rt, st)
        # Keep only the plans: the manifests are re-rendered when applying again.
        st.rendered_for, st.rendered = (uid, generation), dataclasses.replace(rendered, objects=[])

    observed = observed_state(rt, key, st)
    readyz = await fetch_readyz(rt, readyz_targets(rendered, observed.pods))
    observed = dataclasses.replace(observed, readyz=readyz)
    status, events = compute_status(rendered, generation, observed, previous, now)
    rollbacks = await _roll_back_stalled(rt, key, rendered, status, generation)
    if rollbacks:
        # Both transitions get their event: RolloutStalled, then RolledBack.
        observed = dataclasses.replace(observed, rollbacks=rollbacks)
        status, after = compute_status(rendered, generation, observed, previous, now)
        events = [*events, *(e for e in after if e not in events)]
    _record_metrics(key, st, status, observed, now)
    await write_status(rt, st, key, previous, status, events)
    delay = refresh_delay(status, now)
    if delay is not None:
        rt.queue.add(key, delay)
    return REFUSED if st.refused else "success"


def _checked(rt: Runtime, st: ServiceState) -> None:
    """The children were checked (and applied if needed) now: the next resync is one jittered
    interval away."""
    st.applied_at = time.monotonic()
    st.resync_after = rt.config.resync_delay()


def refresh_delay(status: JSON, now: datetime) -> float | None:
    """Seconds until this status should be computed again, or None: a runner that starts (or
    fails readiness) changes what status shows of it without any pod event. A pod younger than
    ELAPSED_STEP is looked at again when it reaches that age (kwok's pods are ready by then and
    cause nothing more); an older one every STARTING_REFRESH seconds."""
    delays = []
    for entry in status.get("runners") or []:
        if entry.get("reason") == READINESS_FAILING:
            delays.append(STARTING_REFRESH)
        elif entry.get("reason") == STARTING:
            created = parse_time((entry.get("startup") or {}).get("created"))
            if created is None:
                continue
            age = (now - created).total_seconds()
            delays.append(STARTING_REFRESH if age >= ELAPSED_STEP else ELAPSED_STEP - age + 1.0)
    return min(delays) if delays else None


async def _roll_back_stalled(
    rt: Runtime, key: ServiceKey, rendered: Rendered, status: JSON, generation: int
) -> dict[str, RolledBackStatus]:
    entries = {e.get("name"): e for e in status.get("runners") or []}
    done: dict[str, RolledBackStatus] = {}
    for plan in rendered.runners:
        entry = entries.get(plan.name)
        if entry is not None:
            rolled = await roll_back(rt, key, plan, entry, generation)
            if rolled is not None:
                done[plan.name] = rolled
    return done


def _record_metrics(
    key: ServiceKey, st: ServiceState, status: JSON, observed: Observed, now: datetime
) -> None:
    for entry in status.get("runners") or []:
        stalled = 1 if entry.get("reason") == STALLED_REASON else 0
        ROLLOUT_STALLED.labels(key[0], key[1], str(entry.get("name"))).set(stalled)
    names = set()
    for pod in observed.pods:
        meta = pod.get("metadata") or {}
        if (meta.get("labels") or {}).get(naming.LABEL_COMPONENT) != naming.RUNNER_COMPONENT:
            continue
        name = str(meta.get("name"))
        names.add(name)
        if name in st.startup_counted:
            continue
        phases = startup_phases(pod, None, now)
        if phases.workers_ready is None:
            continue
        st.startup_counted.add(name)
        if phases.workers_ready >= _STARTED_AT:
            for phase, seconds in phases.seconds.items():
                RUNNER_STARTUP.labels(phase).observe(seconds)
    st.startup_counted &= names  # forget pods that are gone


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

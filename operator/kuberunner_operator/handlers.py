"""kopf wiring and the one level-based reconcile of a RunnerService.

kopf only watches RunnerServices; owned children and their pods, the busy streams, come from
our own informers (informer.py). Every event is recorded in the `Cache` and turns into a key on
the `WorkQueue`. Workers run `reconcile`, which validates the
spec, renders the children (pure), applies them with server-side apply, prunes what the spec no
longer names, and writes only `status` (pure `compute_status`). Low-level `on.event` handlers
write no annotations and add no finalizer, so deleting a RunnerService never waits for the
operator; owner references make the garbage collector remove the children.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from kuberunner_operator import settings as s
from kuberunner_operator.informer import Informer, Source, watch_plan
from kuberunner_operator.kube import ApiError, KubeClient, TransportError
from kuberunner_operator.metrics import MANAGED_SERVICES, QUEUE_DEPTH, RECONCILE_DURATION
from kuberunner_operator.metrics import RECONCILE_TOTAL as RECONCILE
from kuberunner_operator.models import RunnerServiceSpec
from kuberunner_operator.observe import (
    Activity,
    Cache,
    ServiceKey,
    ServiceState,
    WorkQueue,
    merge_patch,
    owner_key,
)
from kuberunner_operator.render import Rendered, render_service
from kuberunner_operator.status import Observed, compute_status, invalid_spec_status

log = logging.getLogger("kuberunner.operator")

EVENT_TYPES = {"Normal", "Warning"}
INVALID = "invalid"  # reconcile result: spec rejected by the models, reported in status
REFUSED = "refused"  # reconcile result: the API server refused a child, reported in status
# 4xx answers to an apply that are not about the object itself: retried as errors.
_NOT_REFUSALS = {401, 403, 404, 408, 409, 429}

# An explicit plain registry: kopf's default "smart" one imports the `kubernetes` package just
# to see whether it is installed, which costs tens of MB of RSS (P9).
registry = kopf.OperatorRegistry()


@dataclass
class Runtime:
    """Operator-wide context, handed to kopf as the memo (shared, never copied)."""

    config: s.OperatorConfig
    kube: KubeClient
    activity: Activity
    cache: Cache = field(default_factory=Cache)
    queue: WorkQueue = field(default_factory=WorkQueue)

    def __copy__(self) -> Runtime:
        return self


# ---------------------------------------------------------------------------------------------
# kopf handlers: record, enqueue, return.


@kopf.on.startup(registry=registry)
async def configure(settings: kopf.OperatorSettings, memo: Runtime, **_: Any) -> None:
    s.configure_kopf(settings, memo.config)


@kopf.on.login(registry=registry)
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # kopf's own minimal loaders, in the order of `kube.load_config`: the `kubernetes` package
    # is never imported (it is most of a Python operator's memory, P9).
    if os.environ.get("KUBECONFIG"):
        return kopf.login_with_kubeconfig(**kwargs)
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.event(s.GROUP, s.VERSION, s.PLURAL, registry=registry)
async def runnerservice_event(event: kopf.RawEvent, memo: Runtime, **_: Any) -> None:
    obj = event["object"]
    meta = obj.get("metadata") or {}
    key: ServiceKey = (str(meta.get("namespace")), str(meta.get("name")))
    memo.activity.last_event = time.monotonic()
    if event["type"] == "DELETED":
        memo.cache.set_service(key, None)
        MANAGED_SERVICES.set(memo.cache.managed_count())
        return
    known = memo.cache.services.get(key)
    spec_changed = (
        known is None or known.body is None or _generation(known.body) != (meta.get("generation"))
    )
    memo.cache.set_service(key, obj)
    MANAGED_SERVICES.set(memo.cache.managed_count())
    # Spec changes reconcile at once; status-only echoes of our own writes coalesce.
    if spec_changed:
        memo.queue.add(key, urgent=True)
    else:
        memo.queue.add(key, memo.config.debounce_seconds)


def child_event(rt: Runtime, event_type: str, obj: dict[str, Any]) -> None:
    """A Deployment, Service, HPA or PDB we manage changed (from the informers)."""
    rt.activity.last_event = time.monotonic()
    drifted = rt.cache.set_child(obj, deleted=event_type == "DELETED")
    if drifted is not None:
        rt.queue.add(drifted, urgent=True)  # edited or deleted by someone else: repair now
        return
    key = owner_key(obj)
    if key is not None and _known(rt, key):
        rt.queue.add(key, rt.config.debounce_seconds)


def pod_event(rt: Runtime, event_type: str, obj: dict[str, Any]) -> None:
    """A pod of a managed runner changed: its service's status may change."""
    rt.activity.last_event = time.monotonic()
    key = rt.cache.set_pod(obj, deleted=event_type == "DELETED")
    if key is not None and _known(rt, key):
        rt.queue.add(key, rt.config.debounce_seconds)


def _known(rt: Runtime, key: ServiceKey) -> bool:
    st = rt.cache.services.get(key)
    return st is not None and st.body is not None


# The owned kinds and their pods, followed by plain list-and-watch loops (see informer.py).
CHILD_SOURCES = tuple(
    Source(api_version, kind, s.MANAGED_SELECTOR)
    for api_version, kind in (
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("policy/v1", "PodDisruptionBudget"),
    )
)
POD_SOURCE = Source("v1", "Pod", s.MANAGED_SELECTOR)


def informers(rt: Runtime) -> list[Informer]:
    """One informer per watched kind and namespace (cluster-wide for all namespaces or for
    namespace patterns, see `watch_plan`)."""
    namespaces, wanted = watch_plan(rt.config.namespaces)

    def watched(obj: dict[str, Any]) -> bool:
        return wanted is None or wanted(str((obj.get("metadata") or {}).get("namespace")))

    def on_child(event_type: str, obj: dict[str, Any]) -> None:
        if watched(obj):
            child_event(rt, event_type, obj)

    def on_pod(event_type: str, obj: dict[str, Any]) -> None:
        if watched(obj):
            pod_event(rt, event_type, obj)

    return [
        Informer(rt.kube, source, ns, on_pod if source is POD_SOURCE else on_child)
        for ns in namespaces
        for source in (*CHILD_SOURCES, POD_SOURCE)
    ]


# ---------------------------------------------------------------------------------------------
# The reconcile loop (runs in worker tasks next to kopf, in the same event loop).


def _generation(body: Mapping[str, Any]) -> int:
    return int((body.get("metadata") or {}).get("generation") or 0)


def _digest(objects: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(objects, sort_keys=True).encode()).hexdigest()


# Backoff caps. A failure of this service (a webhook refusing it, say) backs off to 2 minutes.
# When the API server is unreachable or overloaded every service fails alike; retrying each
# every 5 s costs little, and a longer wait would only delay catching up once it is back.
MAX_BACKOFF = 120.0
SERVER_TROUBLE_BACKOFF = 5.0
_SERVER_TROUBLE = {429, 500, 502, 503, 504}


async def worker(rt: Runtime) -> None:
    while True:
        key = await rt.queue.get()
        QUEUE_DEPTH.set(rt.queue.depth())
        start = time.perf_counter()
        result, retry = "error", True
        cap = MAX_BACKOFF
        try:
            result, retry = await reconcile(rt, key), False
            if result == INVALID:  # the user must change the spec; retrying cannot help
                result = "error"
            elif result == REFUSED:  # reported in status; retried with backoff (quota, webhook)
                result, retry = "error", True
        except ApiError as exc:
            if _namespace_terminating(exc):  # its objects go with it; nothing left to do
                result, retry = "success", False
            elif exc.code == 409:  # lost an optimistic-concurrency race: plainly try again
                result = "requeue"
            elif exc.code in _SERVER_TROUBLE:
                cap = SERVER_TROUBLE_BACKOFF
            if retry:
                log.warning("reconcile %s/%s: %s", key[0], key[1], exc)
        except TransportError as exc:  # transient network trouble: one line, then backoff
            cap = SERVER_TROUBLE_BACKOFF
            log.warning("reconcile %s/%s: %s: %s", key[0], key[1], type(exc).__name__, exc)
        except Exception:
            log.exception("reconcile %s/%s failed", key[0], key[1])
        finally:
            RECONCILE_DURATION.observe(time.perf_counter() - start)
            RECONCILE.labels(result=result).inc()
            rt.queue.done(key)
            rt.activity.last_reconcile = time.monotonic()
        st = rt.cache.services.get(key)
        if st is None:
            continue
        if retry:
            # Exponential backoff per service, capped: never a hot retry loop.
            st.failures += 1
            rt.queue.add(key, min(0.5 * 2**st.failures, cap))
        else:
            st.failures = 0


def _namespace_terminating(exc: ApiError) -> bool:
    return exc.code == 403 and "being terminated" in exc.message


async def resync_loop(rt: Runtime, period: float = 5.0) -> None:
    """Queue services whose last full apply is older than their jittered resync interval."""
    while True:
        await asyncio.sleep(period)
        now = time.monotonic()
        for key, st in list(rt.cache.services.items()):
            if st.body is not None and st.applied_at and now - st.applied_at > st.resync_after:
                st.drift = True
                rt.queue.add(key)


async def reconcile(rt: Runtime, key: ServiceKey) -> str:
    """Converge one RunnerService; returns "success" or INVALID (exceptions mean retry)."""
    st = rt.cache.services.get(key)
    body = st.body if st is not None else None
    if st is None or body is None or body["metadata"].get("deletionTimestamp"):
        return "success"  # gone or going: the garbage collector removes the children
    namespace, name = key
    meta = body["metadata"]
    generation = _generation(body)
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
            message = _validation_message(exc)
            status, events = invalid_spec_status(generation, message, previous, now)
            await _write_status(rt, st, key, previous, status, events)
            return INVALID  # terminal until the spec changes (that event queues it again)
        rendered = render_service(name, namespace, uid, generation, spec)
        digest = _digest(rendered.objects)
        if st.drift or digest != st.applied_hash:
            st.drift = False  # cleared first: drift seen while applying triggers another pass
            try:
                await _apply(rt, key, rendered.objects)
                await _replace_edited_templates(rt, key, st, rendered.objects)
                await _prune(rt, key, st, rendered, uid)
            except BaseException:
                st.drift = True
                raise
            if st.refused:
                st.drift = True  # applied again on the next pass (after the backoff)
            else:
                st.applied_hash = digest
            st.applied_at = time.monotonic()
            st.resync_after = rt.config.resync_delay()
        # Keep only the plans: the manifests are re-rendered when applying again.
        st.rendered_for, st.rendered = (uid, generation), dataclasses.replace(rendered, objects=[])

    observed = Observed(
        deployments={
            child_name: child
            for (kind, child_name), child in st.children.items()
            if kind == "Deployment"
        },
        pods=list(st.pods.values()),
        hpas={
            child_name: child
            for (kind, child_name), child in st.children.items()
            if kind == "HorizontalPodAutoscaler"
        },
        refused=dict(st.refused),
    )
    status, events = compute_status(rendered, generation, observed, previous, now)
    await _write_status(rt, st, key, previous, status, events)
    return REFUSED if st.refused else "success"


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"spec.{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts)


# Apply waves: workloads and Services first, then what refers to them (HPA, PDB).
_LATE_KINDS = {"HorizontalPodAutoscaler", "PodDisruptionBudget"}


def _refusal(exc: ApiError) -> bool:
    """An answer saying the object itself is unacceptable (422 invalid, 413 too large, 400)."""
    return 400 <= exc.code < 500 and exc.code not in _NOT_REFUSALS


async def _apply(rt: Runtime, key: ServiceKey, objects: list[dict[str, Any]]) -> None:
    """Apply every object; the ones the API server refuses are recorded in `refused` (the
    status reports them) instead of failing the pass, so that the others are still applied."""
    refused: dict[str, str] = {}

    async def one(obj: dict[str, Any]) -> None:
        try:
            live = await rt.kube.apply(obj)
        except ApiError as exc:
            if not _refusal(exc):
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
    for wave in (
        [o for o in objects if o["kind"] not in _LATE_KINDS],
        [o for o in objects if o["kind"] in _LATE_KINDS],
    ):
        if wave:
            await asyncio.gather(*(one(o) for o in wave))
    st = rt.cache.state(key)
    st.refused = refused


# Template annotations that tools write on purpose (`kubectl rollout restart`): kept on repair.
_KEPT_TEMPLATE_ANNOTATIONS = ("kubectl.kubernetes.io/restartedAt",)


async def _replace_edited_templates(
    rt: Runtime, key: ServiceKey, st: ServiceState, objects: list[dict[str, Any]]
) -> None:
    """Undo hand edits of a Deployment's pod template (an added env var, say) that server-side
    apply leaves alone because another field manager owns them. Replicas are never touched."""
    edited, st.edited = st.edited, set()
    for obj in objects:
        ckey = (obj["kind"], obj["metadata"]["name"])
        if obj["kind"] != "Deployment" or ckey not in edited:
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


async def _prune(
    rt: Runtime, key: ServiceKey, st: ServiceState, rendered: Rendered, uid: str
) -> None:
    """Delete children of runners no longer in the spec (an invalid runner keeps its last good
    objects: a typo must not take a serving runner down)."""
    wanted = {(o["kind"], o["metadata"]["name"]) for o in rendered.objects}
    keep_names = {plan.object_name for plan in rendered.plans if plan.invalid}
    for (kind, child_name), child in list(st.children.items()):
        if (kind, child_name) in wanted or child_name in keep_names:
            continue
        owners = (child.get("metadata") or {}).get("ownerReferences") or []
        if not any(ref.get("uid") == uid for ref in owners):
            continue
        api_version = str(child.get("apiVersion") or _API_VERSIONS[kind])
        if await rt.kube.delete(api_version, kind, child_name, key[0]):
            log.info("pruned %s %s/%s", kind, key[0], child_name)
        st.children.pop((kind, child_name), None)
        st.applied_generations.pop((kind, child_name), None)


_API_VERSIONS = {
    "Deployment": "apps/v1",
    "Service": "v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "PodDisruptionBudget": "policy/v1",
}


async def _write_status(
    rt: Runtime,
    st: ServiceState,
    key: ServiceKey,
    previous: dict[str, Any],
    status: dict[str, Any],
    events: Sequence[tuple[str, str, str]],
) -> None:
    patch = merge_patch(previous, status)
    if patch:
        live = await rt.kube.patch_status(s.API_VERSION, s.KIND, key[1], key[0], patch)
        if st.body is not None:  # the watch echo may lag; the next pass diffs against this
            st.body["status"] = live.get("status") or status
    for type_, reason, message in events:
        await _post_event(rt, st, type_, reason, message)


async def _post_event(rt: Runtime, st: ServiceState, type_: str, reason: str, msg: str) -> None:
    body = st.body
    if body is None:
        return
    meta = body["metadata"]
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "generateName": f"{meta['name']}.",
            "namespace": meta["namespace"],
        },
        "involvedObject": {
            "apiVersion": s.API_VERSION,
            "kind": s.KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_ if type_ in EVENT_TYPES else "Normal",
        "reason": reason,
        "message": msg[:1024],
        "source": {"component": "kuberunner-operator"},
        "reportingComponent": "kuberunner.io/operator",
        "reportingInstance": rt.config.identity[:128],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    try:
        await rt.kube.create(event)
    except ApiError as exc:  # an event is best effort; status already says it
        if not _namespace_terminating(exc):
            log.warning("posting event %s failed: %s", reason, exc)

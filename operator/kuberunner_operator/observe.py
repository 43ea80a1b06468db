"""What the operator has seen, and which services wait for a reconcile.

`Cache` is filled by the kopf watch handlers (server-side filtered by the managed-by label):
RunnerService bodies, their children and their pods, all keyed by the owning service. The
reconcile reads observed state from here instead of listing through the API on every pass.

`WorkQueue` is a controller-runtime style queue: a key is queued at most once, a key being
processed is never processed twice at the same time (a new trigger marks it dirty and it runs
again afterwards), and delayed adds coalesce bursts of pod events into one reconcile.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SERVICE_LABEL = "kuberunner.io/service"
RUNNER_LABEL = "kuberunner.io/runner"
COMPONENT_LABEL = "app.kubernetes.io/component"

ServiceKey = tuple[str, str]  # (namespace, name)
ChildKey = tuple[str, str]  # (kind, name)
JSON = dict[str, Any]


def strip(obj: Mapping[str, Any]) -> JSON:
    """A copy without `managedFields` (most of a body's bytes, never needed here) and with a
    pod template reduced to its annotations (drift is judged by `template_digest`)."""
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    out = dict(obj)
    out["metadata"] = meta
    spec = obj.get("spec")
    if isinstance(spec, Mapping) and isinstance(spec.get("template"), Mapping):
        annotations = (spec["template"].get("metadata") or {}).get("annotations") or {}
        out["spec"] = {**spec, "template": {"metadata": {"annotations": dict(annotations)}}}
    return out


def template_digest(obj: Mapping[str, Any]) -> str | None:
    template = (obj.get("spec") or {}).get("template")
    if template is None:
        return None
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()


def pod_summary(pod: Mapping[str, Any]) -> JSON:
    """The fields of a Pod that status needs: labels, annotations, node, phase and conditions."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "labels": dict(meta.get("labels") or {}),
            "annotations": dict(meta.get("annotations") or {}),
            "deletionTimestamp": meta.get("deletionTimestamp"),
        },
        "spec": {"nodeName": (pod.get("spec") or {}).get("nodeName")},
        "status": {
            key: status[key]
            for key in ("phase", "conditions", "containerStatuses", "initContainerStatuses")
            if key in status
        },
    }


def owner_key(obj: Mapping[str, Any]) -> ServiceKey | None:
    meta = obj.get("metadata") or {}
    service = (meta.get("labels") or {}).get(SERVICE_LABEL)
    if not service or not meta.get("namespace"):
        return None
    return (str(meta["namespace"]), str(service))


@dataclass
class ServiceState:
    """Everything known about one RunnerService."""

    body: JSON | None = None
    children: dict[ChildKey, JSON] = field(default_factory=dict)
    pods: dict[str, JSON] = field(default_factory=dict)
    # metadata.generation of each child as our last apply left it (0 for kinds without one,
    # such as core Services); a watch event with a newer generation means somebody else edited
    # the child (drift), the DELETED event of any child in here means it must be recreated.
    applied_generations: dict[ChildKey, int] = field(default_factory=dict)
    applied_hash: str | None = None
    # (uid, generation) -> validated and rendered spec: status refreshes after pod events
    # reuse it instead of validating and rendering again (the spec cannot change without a
    # new generation).
    rendered_for: tuple[str, int] | None = None
    rendered: Any = None  # Rendered without objects (plans only): objects are re-rendered
    applied_at: float = 0.0
    resync_after: float = 0.0
    drift: bool = False
    # Children edited by someone else (not deleted): apply alone cannot remove fields another
    # field manager added, so their pod templates are replaced whole.
    edited: set[ChildKey] = field(default_factory=set)
    applied_templates: dict[ChildKey, str] = field(default_factory=dict)  # template digests
    failures: int = 0
    # Children the API server refused at the last apply (object name -> its message): shown
    # in status as ApplyFailed until an apply of that child succeeds.
    refused: dict[str, str] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return self.body is None and not self.children and not self.pods


class Cache:
    def __init__(self) -> None:
        self.services: dict[ServiceKey, ServiceState] = {}

    def state(self, key: ServiceKey) -> ServiceState:
        st = self.services.get(key)
        if st is None:
            st = self.services[key] = ServiceState()
        return st

    def _gc(self, key: ServiceKey) -> None:
        st = self.services.get(key)
        if st is not None and st.is_empty():
            del self.services[key]

    def managed_count(self) -> int:
        return sum(1 for st in self.services.values() if st.body is not None)

    def set_service(self, key: ServiceKey, body: Mapping[str, Any] | None) -> None:
        if body is None:
            st = self.services.get(key)
            if st is not None:
                st.body = None
                st.applied_hash = None
                st.applied_generations.clear()
                st.applied_templates.clear()
                st.edited.clear()
                self._gc(key)
            return
        self.state(key).body = strip(body)

    def set_child(self, obj: Mapping[str, Any], deleted: bool) -> ServiceKey | None:
        """Record a child; returns the owning service when the event shows drift."""
        key = owner_key(obj)
        if key is None:
            return None
        st = self.state(key)
        ckey = (str(obj.get("kind")), str(obj["metadata"]["name"]))
        if deleted:
            st.children.pop(ckey, None)
            drifted = st.body is not None and ckey in st.applied_generations
            st.applied_generations.pop(ckey, None)
            self._gc(key)
        else:
            st.children[ckey] = strip(obj)
            gen = obj["metadata"].get("generation")
            applied = st.applied_generations.get(ckey)
            drifted = applied is not None and isinstance(gen, int) and gen > applied
            # A replicas-only change (the HPA scaling) leaves the template as we applied it.
            if drifted:
                digest = template_digest(obj)
                if digest is not None and digest != st.applied_templates.get(ckey):
                    st.edited.add(ckey)
        if drifted:
            st.drift = True
            return key
        return None

    def record_applied(self, key: ServiceKey, live: Mapping[str, Any]) -> None:
        st = self.state(key)
        ckey = (str(live.get("kind")), str(live["metadata"]["name"]))
        st.children[ckey] = strip(live)
        gen = live["metadata"].get("generation")
        # Core Services have no generation: record them anyway, so that their deletion is
        # seen as drift (a later edit of such a child is repaired by the periodic resync).
        st.applied_generations[ckey] = gen if isinstance(gen, int) else 0
        digest = template_digest(live)
        if digest is not None:
            st.applied_templates[ckey] = digest

    def set_pod(self, pod: Mapping[str, Any], deleted: bool) -> ServiceKey | None:
        key = owner_key(pod)
        if key is None:
            return None
        name = str(pod["metadata"]["name"])
        if deleted:
            st = self.services.get(key)
            if st is not None:
                st.pods.pop(name, None)
                self._gc(key)
        else:
            self.state(key).pods[name] = pod_summary(pod)
        return key


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


class WorkQueue:
    """Deduplicating, delay-coalescing queue of service keys, with two priorities.

    Urgent keys (a spec change, drift) are served before the rest (status refreshes after pod
    events), so under load every service gets its children and first status before anyone's
    status is polished.
    """

    def __init__(self) -> None:
        # One token per queued key; the deques may hold stale duplicates (skipped on get).
        self._tokens: asyncio.Queue[None] = asyncio.Queue()
        self._urgent: deque[ServiceKey] = deque()
        self._normal: deque[ServiceKey] = deque()
        self._queued: dict[ServiceKey, bool] = {}  # key -> urgent
        self._active: set[ServiceKey] = set()
        self._dirty: dict[ServiceKey, bool] = {}
        self._timers: dict[ServiceKey, asyncio.TimerHandle] = {}

    def add(self, key: ServiceKey, delay: float = 0.0, *, urgent: bool = False) -> None:
        """Queue now, or after `delay` unless already queued or scheduled sooner."""
        if delay <= 0:
            timer = self._timers.pop(key, None)
            if timer is not None:
                timer.cancel()
            self._fire(key, urgent)
            return
        if key in self._queued or key in self._timers:
            return
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self._fire, key, urgent)

    def _fire(self, key: ServiceKey, urgent: bool) -> None:
        self._timers.pop(key, None)
        if key in self._active:
            self._dirty[key] = self._dirty.get(key, False) or urgent
            return
        queued = self._queued.get(key)
        if queued is None:
            self._queued[key] = urgent
            (self._urgent if urgent else self._normal).append(key)
            self._tokens.put_nowait(None)
        elif urgent and not queued:  # promote; the normal entry goes stale
            self._queued[key] = True
            self._urgent.append(key)

    def _pop(self) -> ServiceKey:
        while self._urgent:
            key = self._urgent.popleft()
            if self._queued.get(key) is True:
                return key
        while True:
            key = self._normal.popleft()
            if self._queued.get(key) is False:
                return key

    async def get(self) -> ServiceKey:
        await self._tokens.get()
        key = self._pop()
        del self._queued[key]
        self._active.add(key)
        return key

    def done(self, key: ServiceKey) -> None:
        self._active.discard(key)
        urgent = self._dirty.pop(key, None)
        if urgent is not None:
            self._fire(key, urgent)

    def depth(self) -> int:
        return len(self._queued)

    def idle(self) -> bool:
        return not (self._queued or self._active or self._timers)


@dataclass
class Activity:
    """Timestamps the health endpoints read (from another thread: plain floats only)."""

    heartbeat: float = field(default_factory=time.monotonic)
    last_event: float = 0.0
    last_reconcile: float = 0.0
    pending_since: float = 0.0  # 0 while the queue is empty
    leading: bool = False
    watching: bool = False

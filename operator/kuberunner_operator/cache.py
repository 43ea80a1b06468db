"""What the operator has seen: RunnerService bodies, their children and their pods.

The informers and the kopf watch handler fill it; the reconcile reads observed state from here
instead of listing through the API on every pass.

How an object finds its RunnerService:
- a child (Deployment, Service, HPA, PDB) by its controller owner reference, which carries the
  service's exact name whatever its length;
- a pod has no such reference (its owner is a ReplicaSet), so pods are indexed by their
  `kuberunner.io/service` label. That label holds the name only up to 63 characters and a
  hashed form past that (`naming.label_value`), so the index maps each known service's label
  value back to its name, and pods are stored under the label until their service is known.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from kuberunner_operator.kinds import GROUP, RUNNER_SERVICE
from kuberunner_operator.naming import LABEL_SERVICE, label_value

ServiceKey = tuple[str, str]  # (namespace, name)
LabelKey = tuple[str, str]  # (namespace, value of the kuberunner.io/service label)
ChildKey = tuple[str, str]  # (kind, name)


def child_key(obj: Mapping[str, Any]) -> ChildKey:
    return (str(obj.get("kind")), str(obj["metadata"]["name"]))


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


def content_digest(obj: Any) -> str:
    """sha256 of `obj` as JSON with sorted keys: equal content, equal digest (within one
    process; digests are never stored). orjson is several times faster than `json` here, a few
    % of the operator's CPU under load; `json` takes what orjson refuses (integers past 64 bits,
    non-string keys)."""
    try:
        raw = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        raw = json.dumps(obj, sort_keys=True).encode()
    return hashlib.sha256(raw).hexdigest()


def template_digest(obj: Mapping[str, Any]) -> str | None:
    template = (obj.get("spec") or {}).get("template")
    if template is None:
        return None
    return content_digest(template)


def pod_summary(pod: Mapping[str, Any]) -> JSON:
    """The fields of a Pod that status needs: labels, annotations, node, each container's
    image and limits (to name them in a reason), phase, conditions and container states (their
    times give the start-up phases), its IP (to ask an unready runner its /readyz)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    containers = [
        {
            "name": c.get("name"),
            "image": c.get("image"),
            "resources": {"limits": dict((c.get("resources") or {}).get("limits") or {})},
        }
        for c in (pod.get("spec") or {}).get("containers") or []
    ]
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "creationTimestamp": meta.get("creationTimestamp"),
            "labels": dict(meta.get("labels") or {}),
            "annotations": dict(meta.get("annotations") or {}),
            "deletionTimestamp": meta.get("deletionTimestamp"),
        },
        "spec": {"nodeName": (pod.get("spec") or {}).get("nodeName"), "containers": containers},
        "status": {
            key: status[key]
            for key in (
                "phase",
                "podIP",
                "conditions",
                "containerStatuses",
                "initContainerStatuses",
            )
            if key in status
        },
    }


def controller_owner(obj: Mapping[str, Any]) -> ServiceKey | None:
    """The RunnerService that controls `obj`, from its owner references."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    if not namespace:
        return None
    for ref in meta.get("ownerReferences") or []:
        group = str(ref.get("apiVersion") or "").partition("/")[0]
        if ref.get("controller") and ref.get("kind") == RUNNER_SERVICE.kind and group == GROUP:
            return (str(namespace), str(ref.get("name")))
    return None


def service_label(obj: Mapping[str, Any]) -> LabelKey | None:
    meta = obj.get("metadata") or {}
    value = (meta.get("labels") or {}).get(LABEL_SERVICE)
    if not value or not meta.get("namespace"):
        return None
    return (str(meta["namespace"]), str(value))


def label_key(key: ServiceKey) -> LabelKey:
    """Where the pods of service `key` are indexed (the label value its pods carry)."""
    return (key[0], label_value(key[1]))


@dataclass
class ServiceState:
    """Everything known about one RunnerService, except its pods (see `Cache.pods_of`)."""

    body: JSON | None = None
    children: dict[ChildKey, JSON] = field(default_factory=dict)
    # metadata.generation of each child as our last apply left it (0 for kinds without one,
    # such as core Services); a watch event with a newer generation means somebody else edited
    # the child (drift), the DELETED event of any child in here means it must be recreated.
    applied_generations: dict[ChildKey, int] = field(default_factory=dict)
    # resourceVersion of each child without a generation (core Services) as our last apply
    # left it: the periodic resync compares it to find edits that no generation records.
    applied_versions: dict[ChildKey, str] = field(default_factory=dict)
    applied_hash: str | None = None
    applied_keys: list[ChildKey] = field(default_factory=list)  # the children of that apply
    # (uid, generation) -> validated and rendered spec: status refreshes after pod events
    # reuse it instead of validating and rendering again (the spec cannot change without a
    # new generation).
    rendered_for: tuple[str, int] | None = None
    rendered: Any = None  # Rendered without objects (plans only): objects are re-rendered
    applied_at: float = 0.0
    resync_after: float = 0.0
    drift: bool = False
    # The periodic resync is due: check the children against the cache, apply only if needed.
    resync: bool = False
    # Children edited by someone else (not deleted): apply alone cannot remove fields another
    # field manager added, so their pod templates are replaced whole.
    edited: set[ChildKey] = field(default_factory=set)
    applied_templates: dict[ChildKey, str] = field(default_factory=dict)  # template digests
    failures: int = 0
    # Children the API server refused at the last apply (object name -> its message): shown
    # in status as ApplyFailed until an apply of that child succeeds.
    refused: dict[str, str] = field(default_factory=dict)
    # Pods whose start-up phases went into the startup histogram (each pod counted once).
    startup_counted: set[str] = field(default_factory=set)

    def as_applied(self, ckeys: list[ChildKey]) -> bool:
        """Every child is in the cache as our last apply left it: its generation (its spec) or,
        for kinds without one, its resourceVersion unchanged since. The informers keep the
        cache current, so a resync that finds this true has nothing to write."""
        for ckey in ckeys:
            live = self.children.get(ckey)
            if live is None or ckey not in self.applied_generations:
                return False
            meta = live.get("metadata") or {}
            generation = meta.get("generation")
            if isinstance(generation, int):
                if generation != self.applied_generations[ckey]:
                    return False
            elif meta.get("resourceVersion") != self.applied_versions.get(ckey):
                return False
        return True

    def is_empty(self) -> bool:
        return self.body is None and not self.children


class Cache:
    def __init__(self) -> None:
        self.services: dict[ServiceKey, ServiceState] = {}
        self._pods: dict[LabelKey, dict[str, JSON]] = {}
        # Label value -> service, for the services whose body is known.
        self._by_label: dict[LabelKey, ServiceKey] = {}
        # The services whose body is known: counted on every RunnerService event, so kept
        # rather than found by a scan of all services (quadratic in a burst of creates).
        self._managed: set[ServiceKey] = set()

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
        return len(self._managed)

    def sizes(self) -> dict[str, int]:
        """Objects held, by kind of entry (a debug view: must follow the live objects)."""
        return {
            "services": self.managed_count(),
            "children": sum(len(st.children) for st in self.services.values()),
            "pods": sum(len(pods) for pods in self._pods.values()),
        }

    def pods_of(self, key: ServiceKey) -> list[JSON]:
        return list(self._pods.get(label_key(key), {}).values())

    def set_service(self, key: ServiceKey, body: Mapping[str, Any] | None) -> None:
        if body is None:
            self._by_label.pop(label_key(key), None)
            self._managed.discard(key)
            st = self.services.get(key)
            if st is not None:
                st.body = None
                st.applied_hash = None
                st.applied_generations.clear()
                st.applied_versions.clear()
                st.applied_templates.clear()
                st.edited.clear()
                self._gc(key)
            return
        self._by_label[label_key(key)] = key
        self._managed.add(key)
        self.state(key).body = strip(body)

    def owner_of(self, obj: Mapping[str, Any]) -> ServiceKey | None:
        """The service of a child: its controller owner reference, else (an object someone
        stripped of it) a known service whose label it carries."""
        key = controller_owner(obj)
        if key is not None:
            return key
        label = service_label(obj)
        return None if label is None else self._by_label.get(label)

    def holds(self, key: ServiceKey, obj: Mapping[str, Any]) -> bool:
        """True when service `key`'s cache already has this very version of the child: the
        informer's echo of our own apply (whose answer was recorded) or a relist of an
        unchanged object."""
        version = (obj.get("metadata") or {}).get("resourceVersion")
        st = self.services.get(key)
        if version is None or st is None:
            return False
        held = st.children.get(child_key(obj))
        return held is not None and held["metadata"].get("resourceVersion") == version

    def set_child(self, obj: Mapping[str, Any], deleted: bool) -> ServiceKey | None:
        """Record a child; returns the owning service when the event shows drift."""
        key = self.owner_of(obj)
        if key is None:
            return None
        ckey = child_key(obj)
        if deleted:
            st = self.services.get(key)
            if st is None:
                return None
            st.children.pop(ckey, None)
            drifted = st.body is not None and ckey in st.applied_generations
            st.applied_generations.pop(ckey, None)
            st.applied_versions.pop(ckey, None)
            self._gc(key)
        else:
            st = self.state(key)
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
        ckey = child_key(live)
        st.children[ckey] = strip(live)
        gen = live["metadata"].get("generation")
        # Core Services have no generation: record them anyway, so that their deletion is
        # seen as drift (a later edit of such a child is repaired by the periodic resync).
        st.applied_generations[ckey] = gen if isinstance(gen, int) else 0
        version = live["metadata"].get("resourceVersion")
        if not isinstance(gen, int) and isinstance(version, str):
            st.applied_versions[ckey] = version
        digest = template_digest(live)
        if digest is not None:
            st.applied_templates[ckey] = digest

    def forget_child(self, key: ServiceKey, ckey: ChildKey) -> None:
        st = self.services.get(key)
        if st is not None:
            st.children.pop(ckey, None)
            st.applied_generations.pop(ckey, None)
            st.applied_versions.pop(ckey, None)

    def set_pod(self, pod: Mapping[str, Any], deleted: bool) -> ServiceKey | None:
        """Record a pod; returns its service when that service is known."""
        label = service_label(pod)
        if label is None:
            return None
        name = str(pod["metadata"]["name"])
        if deleted:
            pods = self._pods.get(label)
            if pods is not None:
                pods.pop(name, None)
                if not pods:
                    del self._pods[label]
        else:
            self._pods.setdefault(label, {})[name] = pod_summary(pod)
        return self._by_label.get(label)

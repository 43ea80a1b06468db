"""List-then-watch loops for the objects the operator owns: children and their pods.

These are the busy streams (every pod start is several events, every rollout several Deployment
status writes), so they bypass kopf's per-object machinery, which cost ~1 ms of CPU per event:
one loop per (namespace, kind) lists the managed objects, hands each to a plain callback, then
watches from the list's resourceVersion. A stream that ends is resumed from the last version
seen; an expired version (410) means a fresh list, and objects gone from it are reported as
deleted, so nothing that happened while disconnected is missed. RunnerServices themselves stay
with kopf.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kuberunner_operator.kube import ApiError, KubeClient, TransportError

log = logging.getLogger("kuberunner.operator.informer")

JSON = dict[str, Any]
# Called with ("ADDED" | "MODIFIED" | "DELETED", object); must not block.
Handler = Callable[[str, JSON], None]
ObjectKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Source:
    """One kind to follow, filtered on the server by a label selector."""

    api_version: str
    kind: str
    label_selector: str


def is_pattern(namespace: str) -> bool:
    """A `--namespace` value that is a glob or an exclusion (as kopf accepts), not a name."""
    return namespace.startswith("!") or any(ch in namespace for ch in "*?[")


def namespace_filter(patterns: Sequence[str]) -> Callable[[str], bool]:
    """kopf's matching: in some positive pattern (or no positive ones given), in no `!` one."""
    include = [p for p in patterns if not p.startswith("!")]
    exclude = [p[1:] for p in patterns if p.startswith("!")]

    def matches(namespace: str) -> bool:
        if include and not any(fnmatch.fnmatchcase(namespace, p) for p in include):
            return False
        return not any(fnmatch.fnmatchcase(namespace, p) for p in exclude)

    return matches


def watch_plan(
    namespaces: Sequence[str],
) -> tuple[list[str | None], Callable[[str], bool] | None]:
    """Where informers list and watch, and the filter their events need.

    Plain names get one informer each. Patterns cannot be watched by name: informers then
    watch all namespaces (which needs cluster-wide list/watch rights, as kopf's own namespace
    discovery does) and drop the events of namespaces that do not match.
    """
    if not namespaces:
        return [None], None
    if any(is_pattern(ns) for ns in namespaces):
        return [None], namespace_filter(namespaces)
    return list(dict.fromkeys(namespaces)), None


class Expired(Exception):
    """The watched resourceVersion is too old (410 Gone): list again."""


def tombstone(obj: JSON) -> JSON:
    """What is kept of an object to report its deletion after a relist: identity and labels."""
    meta = obj.get("metadata") or {}
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "labels": dict(meta.get("labels") or {}),
            "ownerReferences": list(meta.get("ownerReferences") or []),
        },
    }


def _key(obj: JSON) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name")))


class Informer:
    """Follows one `Source` in one namespace (or all) and feeds `handler`."""

    def __init__(
        self,
        kube: KubeClient,
        source: Source,
        namespace: str | None,
        handler: Handler,
        *,
        watch_timeout: int = 300,
        # A list per retry is cheap; a long backoff would only delay catching up once the API
        # server is back (it made convergence after a 15 s outage take 30 s).
        max_backoff: float = 5.0,
    ) -> None:
        self.kube = kube
        self.source = source
        self.namespace = namespace
        self.handler = handler
        self.watch_timeout = watch_timeout
        self.max_backoff = max_backoff
        self.synced = asyncio.Event()  # set once the first list has been handed over
        self._known: dict[ObjectKey, JSON] = {}

    def _deliver(self, event_type: str, obj: JSON) -> None:
        obj.setdefault("apiVersion", self.source.api_version)
        obj.setdefault("kind", self.source.kind)
        key = _key(obj)
        if event_type == "DELETED":
            self._known.pop(key, None)
        else:
            self._known[key] = tombstone(obj)
        try:
            self.handler(event_type, obj)
        except Exception:  # one bad object must not stop the stream for all the others
            log.exception("handling %s %s/%s failed", event_type, self.source.kind, key[1])

    async def _relist(self) -> str:
        src = self.source
        items, version = await self.kube.list_with_version(
            src.api_version, src.kind, self.namespace, label_selector=src.label_selector
        )
        previous = self._known
        self._known = {}
        for obj in items:
            self._deliver("MODIFIED" if _key(obj) in previous else "ADDED", obj)
        for key, gone in previous.items():
            if key not in self._known:
                self._deliver("DELETED", gone)
        self.synced.set()
        return version

    async def _follow(self, version: str) -> str:
        """Consume one watch stream; returns the last resourceVersion seen."""
        src = self.source
        stream = self.kube.watch(
            src.api_version,
            src.kind,
            self.namespace,
            resource_version=version,
            label_selector=src.label_selector,
            timeout_seconds=self.watch_timeout,
            bookmarks=True,
        )
        try:
            async for event in stream:
                version = self._handle(event, version)
        except ApiError as exc:
            if exc.code == 410:
                raise Expired() from exc
            raise
        return version

    def _handle(self, event: JSON, version: str) -> str:
        event_type = str(event.get("type"))
        obj = event.get("object") or {}
        if event_type == "ERROR":
            if obj.get("code") == 410:
                raise Expired()
            raise ApiError(int(obj.get("code") or 500), str(obj.get("reason")), str(obj))
        if event_type != "BOOKMARK":
            self._deliver(event_type, obj)
        return str((obj.get("metadata") or {}).get("resourceVersion") or version)

    async def run(self) -> None:
        failures = 0
        version: str | None = None
        while True:
            try:
                if version is None:
                    version = await self._relist()
                started = asyncio.get_running_loop().time()
                version = await self._follow(version)
                failures = 0
                if asyncio.get_running_loop().time() - started < 1.0:
                    await asyncio.sleep(1.0)  # a stream that ends at once must not spin
            except Expired:
                version = None
            except (ApiError, TransportError) as exc:
                failures += 1
                delay = min(0.5 * 2**failures, self.max_backoff)
                log.warning(
                    "watching %s (%s) failed, again in %.1fs: %s",
                    self.source.kind,
                    self.namespace or "all namespaces",
                    delay,
                    exc,
                )
                # After an error the stream position is uncertain: list again.
                version = None
                await asyncio.sleep(delay)

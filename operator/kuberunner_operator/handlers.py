"""kopf wiring and the event entry points: record what changed, queue the service, return.

kopf logs in and watches RunnerServices; owned children and their pods, the busy streams, come
from our own informers (informer.py). Every event is recorded in the `Cache` and turns into a
key on the `WorkQueue`; the workers (retry.py) run `reconcile` (reconcile.py). Low-level
`on.event` handlers write no annotations and add no finalizer, so deleting a RunnerService never
waits for the operator; owner references make the garbage collector remove the children.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import kopf

from kuberunner_operator import settings as s
from kuberunner_operator.cache import ServiceKey
from kuberunner_operator.informer import Informer, Source, watch_plan
from kuberunner_operator.kinds import CHILD_KINDS, GROUP, POD, RUNNER_SERVICE, VERSION
from kuberunner_operator.metrics import MANAGED_SERVICES, forget_service
from kuberunner_operator.naming import MANAGED_SELECTOR
from kuberunner_operator.reconcile import generation_of
from kuberunner_operator.runtime import Runtime

# An explicit plain registry: kopf's default "smart" one imports the `kubernetes` package just
# to see whether it is installed, which costs tens of MB of RSS (P9).
registry = kopf.OperatorRegistry()


@kopf.on.startup(registry=registry)
async def configure(settings: kopf.OperatorSettings, memo: Runtime, **_: Any) -> None:
    s.configure_kopf(settings, memo.config)


@kopf.on.login(registry=registry)
async def login(memo: Runtime, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """Server, CA and client certificate from kopf's own minimal loaders (they never import
    the `kubernetes` package, P9), in the order of `kube.load_config`; the token from our own
    source, which follows tokenFile rotation and exec plugins that kopf's loaders ignore.
    kopf calls this again after a 401, so the token is read anew each time."""
    if os.environ.get("KUBECONFIG"):
        info = kopf.login_with_kubeconfig(**kwargs)
    else:
        info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is None:
        return None
    tokens = memo.kube.config.tokens
    tokens.invalidate()
    token = await tokens.token()
    if token is None:
        return info
    return dataclasses.replace(info, scheme="Bearer", token=token)


@kopf.on.event(GROUP, VERSION, RUNNER_SERVICE.plural, registry=registry)
async def runnerservice_event(event: kopf.RawEvent, memo: Runtime, **_: Any) -> None:
    obj = event["object"]
    meta = obj.get("metadata") or {}
    key: ServiceKey = (str(meta.get("namespace")), str(meta.get("name")))
    memo.activity.last_event = time.monotonic()
    if event["type"] == "DELETED":
        memo.cache.set_service(key, None)
        MANAGED_SERVICES.set(memo.cache.managed_count())
        forget_service(*key)
        return
    known = memo.cache.services.get(key)
    before = known.body if known is not None else None
    spec_changed = before is None or generation_of(before) != meta.get("generation")
    # The echo of our own status write: the same generation and the status we wrote. The
    # reconcile reads nothing else of the body, so there is nothing to do.
    echo = not spec_changed and before is not None and before.get("status") == obj.get("status")
    memo.cache.set_service(key, obj)
    MANAGED_SERVICES.set(memo.cache.managed_count())
    # Spec changes reconcile at once; other changes (status edited by someone else, a
    # deletion under way) coalesce.
    if spec_changed:
        memo.queue.add(key, urgent=True)
    elif not echo:
        memo.queue.add(key, memo.config.debounce_seconds)


def child_event(rt: Runtime, event_type: str, obj: dict[str, Any]) -> None:
    """A Deployment, Service, HPA or PDB we manage changed (from the informers)."""
    rt.activity.last_event = time.monotonic()
    deleted = event_type == "DELETED"
    key = rt.cache.owner_of(obj)  # recording a child never changes whose it is
    # The echo of our own apply shows nothing the reconcile that applied it has not seen:
    # refreshing status for it would be one wasted pass per child.
    news = deleted or key is None or not rt.cache.holds(key, obj)
    drifted = rt.cache.set_child(obj, deleted=deleted)
    if drifted is not None:
        rt.queue.add(drifted, urgent=True)  # edited or deleted by someone else: repair now
        return
    if news and key is not None and _known(rt, key):
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
CHILD_SOURCES = tuple(Source(k.api_version, k.kind, MANAGED_SELECTOR) for k in CHILD_KINDS)
POD_SOURCE = Source(POD.api_version, POD.kind, MANAGED_SELECTOR)


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

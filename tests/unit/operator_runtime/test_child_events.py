"""What a child's watch event queues: nothing for the echo of our own apply, a debounced
status refresh for news, an immediate repair for drift."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from kuberunner_operator.handlers import child_event
from kuberunner_operator.health import Activity
from kuberunner_operator.kube import KubeClient
from kuberunner_operator.naming import label_value
from kuberunner_operator.runtime import Runtime
from kuberunner_operator.settings import OperatorConfig

KEY = ("ns", "svc")


def deployment(version: str, generation: int = 1) -> dict[str, Any]:
    owner = {"apiVersion": "kuberunner.io/v1alpha1", "kind": "RunnerService", "name": "svc"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "d",
            "namespace": "ns",
            "generation": generation,
            "resourceVersion": version,
            "labels": {"kuberunner.io/service": label_value("svc")},
            "ownerReferences": [{**owner, "uid": "u1", "controller": True}],
        },
        "spec": {"replicas": 1},
    }


def runtime() -> Runtime:
    # child_event never calls the API: the client is not used here.
    rt = Runtime(OperatorConfig(debounce_seconds=0.01), cast(KubeClient, None), Activity())
    rt.cache.set_service(KEY, {"metadata": {"name": "svc", "namespace": "ns", "uid": "u1"}})
    rt.cache.record_applied(KEY, deployment("41"))
    return rt


def test_the_echo_of_our_own_apply_queues_nothing() -> None:
    async def scenario() -> bool:
        rt = runtime()
        child_event(rt, "ADDED", deployment("41"))
        await asyncio.sleep(0.05)
        return rt.queue.idle()

    assert asyncio.run(scenario())


def test_a_new_version_queues_a_refresh_after_the_debounce() -> None:
    async def scenario() -> tuple[int, int]:
        rt = runtime()
        child_event(rt, "MODIFIED", deployment("42"))
        before = rt.queue.depth()
        await asyncio.sleep(0.05)
        return before, rt.queue.depth()

    assert asyncio.run(scenario()) == (0, 1)


def test_drift_and_deletion_queue_at_once() -> None:
    async def scenario() -> list[int]:
        depths = []
        for event_type, obj in (("MODIFIED", deployment("43", 2)), ("DELETED", deployment("41"))):
            rt = runtime()
            child_event(rt, event_type, obj)
            depths.append(rt.queue.depth())
        return depths

    assert asyncio.run(scenario()) == [1, 1]

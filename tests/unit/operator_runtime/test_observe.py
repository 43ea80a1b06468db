"""The operator's in-memory view: merge patches, drift detection, how children and pods find
their service, and the work queue."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kuberunner_operator.cache import Cache, pod_summary
from kuberunner_operator.naming import label_value
from kuberunner_operator.reconcile import merge_patch
from kuberunner_operator.workqueue import WorkQueue


def _owner(service: str) -> dict[str, Any]:
    return {
        "apiVersion": "kuberunner.io/v1alpha1",
        "kind": "RunnerService",
        "name": service,
        "uid": "u1",
        "controller": True,
    }


def _child(kind: str, name: str, generation: int, service: str = "svc") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "ns",
            "generation": generation,
            "labels": {"kuberunner.io/service": label_value(service)},
            "ownerReferences": [_owner(service)],
            "managedFields": [{"manager": "kuberunner"}],
        },
        "spec": {"replicas": 1},
    }


def _pod(name: str, service: str) -> dict[str, Any]:
    labels = {"kuberunner.io/service": label_value(service)}
    return {"metadata": {"name": name, "namespace": "ns", "labels": labels}, "status": {}}


def _service(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns"}}


# 63 characters is the longest label value; past it the label is a hashed form of the name.
LONG_NAMES = ["s" * 63, "s" * 64, "fz-" + "a" * 250]


@pytest.mark.parametrize("name", LONG_NAMES)
def test_children_of_long_named_services_find_their_service(name: str) -> None:
    cache = Cache()
    key = ("ns", name)
    cache.set_service(key, _service(name))
    cache.record_applied(key, _child("Deployment", "d", 1, service=name))
    assert cache.set_child(_child("Deployment", "d", 2, service=name), deleted=False) == key
    assert list(cache.services) == [key]  # no orphan entry under the label value


@pytest.mark.parametrize("name", LONG_NAMES)
def test_pods_of_long_named_services_find_their_service(name: str) -> None:
    cache = Cache()
    key = ("ns", name)
    cache.set_service(key, _service(name))
    assert cache.set_pod(_pod("p1", name), deleted=False) == key
    assert [p["metadata"]["name"] for p in cache.pods_of(key)] == ["p1"]
    assert cache.set_pod(_pod("p1", name), deleted=True) == key
    assert cache.pods_of(key) == []


def test_pods_seen_before_their_service_are_kept_for_it() -> None:
    cache = Cache()
    name = "fz-" + "a" * 250
    assert cache.set_pod(_pod("early", name), deleted=False) is None  # service not known yet
    cache.set_service(("ns", name), _service(name))
    assert [p["metadata"]["name"] for p in cache.pods_of(("ns", name))] == ["early"]
    cache.set_service(("ns", name), None)
    assert cache.set_pod(_pod("early", name), deleted=False) is None


def test_a_child_stripped_of_its_owner_reference_is_found_by_label() -> None:
    cache = Cache()
    cache.set_service(("ns", "svc"), _service("svc"))
    orphan = _child("Deployment", "d", 1)
    orphan["metadata"]["ownerReferences"] = []
    cache.set_child(orphan, deleted=False)
    assert ("Deployment", "d") in cache.services[("ns", "svc")].children


def test_cache_sizes_follow_the_live_objects() -> None:
    cache = Cache()
    cache.set_service(("ns", "svc"), _service("svc"))
    cache.set_service(("ns", "svc"), _service("svc"))  # an update: still one service
    cache.set_child(_child("Deployment", "d", 1), deleted=False)
    cache.set_pod(_pod("p", "svc"), deleted=False)
    assert cache.sizes() == {"services": 1, "children": 1, "pods": 1}
    cache.set_service(("ns", "other"), None)  # a service never seen, deleted: counts nothing
    assert cache.managed_count() == 1
    cache.set_pod(_pod("p", "svc"), deleted=True)
    cache.set_child(_child("Deployment", "d", 1), deleted=True)
    cache.set_service(("ns", "svc"), None)
    assert cache.sizes() == {"services": 0, "children": 0, "pods": 0}
    assert cache.services == {}


def test_merge_patch_is_empty_when_equal() -> None:
    status = {"observedGeneration": 2, "conditions": [{"type": "Ready", "status": "True"}]}
    assert merge_patch(status, dict(status)) == {}


def test_merge_patch_nulls_removed_keys_and_keeps_changed_leaves() -> None:
    old = {"a": 1, "gone": True, "nested": {"x": 1, "y": 2, "drop": 0}, "list": [1, 2]}
    new = {"a": 1, "nested": {"x": 1, "y": 3}, "list": [2], "added": "v"}
    assert merge_patch(old, new) == {
        "gone": None,
        "nested": {"y": 3, "drop": None},
        "list": [2],
        "added": "v",
    }


def test_merge_patch_applied_with_rfc7386_gives_new() -> None:
    def apply(target: Any, patch: Any) -> Any:
        if not isinstance(patch, dict):
            return patch
        out = dict(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = apply(out.get(key), value)
        return out

    old = {"runners": [{"name": "a"}], "summary": {"ready": "0/1", "gpus": 8}, "x": {"y": {}}}
    new = {"runners": [{"name": "a"}, {"name": "b"}], "summary": {"ready": "1/1"}, "z": 1}
    assert apply(old, merge_patch(old, new)) == new


def test_cache_strips_managed_fields() -> None:
    cache = Cache()
    cache.set_child(_child("Deployment", "d", 1), deleted=False)
    stored = cache.services[("ns", "svc")].children[("Deployment", "d")]
    assert "managedFields" not in stored["metadata"]


def test_foreign_edit_after_our_apply_is_drift_but_our_own_echo_is_not() -> None:
    cache = Cache()
    cache.set_service(("ns", "svc"), {"metadata": {"name": "svc", "namespace": "ns"}})
    cache.record_applied(("ns", "svc"), _child("Deployment", "d", 3))
    # The watch echo of our own apply, and a stale older event: no drift.
    assert cache.set_child(_child("Deployment", "d", 3), deleted=False) is None
    assert cache.set_child(_child("Deployment", "d", 2), deleted=False) is None
    # Someone bumped the generation (edited the spec): drift for the owner.
    assert cache.set_child(_child("Deployment", "d", 4), deleted=False) == ("ns", "svc")
    assert cache.services[("ns", "svc")].drift


def test_deleting_an_applied_child_is_drift_only_while_the_service_exists() -> None:
    cache = Cache()
    key = ("ns", "svc")
    cache.set_service(key, {"metadata": {"name": "svc", "namespace": "ns"}})
    cache.record_applied(key, _child("Deployment", "d", 1))
    assert cache.set_child(_child("Deployment", "d", 1), deleted=True) == key
    cache.record_applied(key, _child("Deployment", "d", 1))
    cache.set_service(key, None)  # the service is gone: the GC deletes its children
    assert cache.set_child(_child("Deployment", "d", 1), deleted=True) is None
    assert key not in cache.services


@pytest.mark.parametrize("kind", ["Service", "Deployment", "HorizontalPodAutoscaler"])
def test_deleting_any_applied_child_is_drift_even_without_a_generation(kind: str) -> None:
    cache = Cache()
    key = ("ns", "svc")
    cache.set_service(key, {"metadata": {"name": "svc", "namespace": "ns"}})
    child = _child(kind, "c", 1)
    if kind == "Service":  # core Services have no metadata.generation
        del child["metadata"]["generation"]
    cache.record_applied(key, child)
    assert cache.set_child(child, deleted=False) is None  # our own echo is no drift
    assert cache.set_child(child, deleted=True) == key
    assert cache.services[key].drift


def test_objects_without_owner_or_service_label_are_ignored() -> None:
    cache = Cache()
    obj = _child("Deployment", "d", 1)
    obj["metadata"]["labels"] = {}
    obj["metadata"]["ownerReferences"] = []
    assert cache.set_child(obj, deleted=False) is None
    assert cache.set_pod(obj, deleted=False) is None
    assert cache.services == {}


def test_pod_summary_keeps_only_status_inputs() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "ns", "labels": {"a": "b"}, "managedFields": [1]},
        "spec": {"nodeName": "n1", "containers": [{"env": [{"name": "SECRET", "value": "x"}]}]},
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled"}],
            "podIP": "10.0.0.1",
            "hostIP": "10.1.0.1",
            "qosClass": "Burstable",
        },
    }
    summary = pod_summary(pod)
    # Names, images and limits (for reasons); never env values, which may hold secrets.
    assert summary["spec"] == {
        "nodeName": "n1",
        "containers": [{"name": None, "image": None, "resources": {"limits": {}}}],
    }
    # The pod IP is kept to ask an unready runner its /readyz; nothing else of the status is.
    assert summary["status"] == {
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled"}],
        "podIP": "10.0.0.1",
    }
    assert "managedFields" not in summary["metadata"]


async def _drain(queue: WorkQueue, timeout: float = 0.05) -> list[tuple[str, str]]:
    got = []
    while True:
        try:
            key = await asyncio.wait_for(queue.get(), timeout)
        except TimeoutError:
            return got
        got.append(key)
        queue.done(key)


async def test_queue_deduplicates_pending_keys() -> None:
    queue = WorkQueue()
    for _ in range(5):
        queue.add(("ns", "a"))
    queue.add(("ns", "b"))
    assert await _drain(queue) == [("ns", "a"), ("ns", "b")]


async def test_queue_coalesces_a_burst_of_delayed_adds() -> None:
    queue = WorkQueue()
    for _ in range(50):
        queue.add(("ns", "a"), delay=0.05)
    assert queue.depth() == 0
    await asyncio.sleep(0.1)
    assert await _drain(queue) == [("ns", "a")]
    assert queue.idle()


async def test_immediate_add_overrides_a_pending_delay() -> None:
    queue = WorkQueue()
    queue.add(("ns", "a"), delay=10.0)
    queue.add(("ns", "a"))
    assert await _drain(queue) == [("ns", "a")]
    assert queue.idle()


async def test_key_added_while_processing_runs_again_after_done() -> None:
    queue = WorkQueue()
    queue.add(("ns", "a"))
    key = await queue.get()
    queue.add(("ns", "a"))  # a new event arrives mid-reconcile
    assert queue.depth() == 0  # never two workers on one key
    queue.done(key)
    assert await _drain(queue) == [("ns", "a")]


@pytest.mark.parametrize("delay", [0.0, 0.02])
async def test_queue_never_loses_a_key(delay: float) -> None:
    queue = WorkQueue()
    keys = [("ns", f"s{i}") for i in range(20)]
    for key in keys:
        queue.add(key, delay=delay)
    await asyncio.sleep(delay * 2)
    assert sorted(await _drain(queue)) == sorted(keys)


def test_only_template_edits_are_marked_for_template_replacement() -> None:
    cache = Cache()
    key = ("ns", "svc")
    cache.set_service(key, {"metadata": {"name": "svc", "namespace": "ns"}})
    ours = _child("Deployment", "d", 1)
    ours["spec"]["template"] = {"spec": {"containers": [{"name": "runner", "image": "a"}]}}
    cache.record_applied(key, ours)
    scaled = _child("Deployment", "d", 2)
    scaled["spec"] = {"replicas": 3, "template": ours["spec"]["template"]}
    assert cache.set_child(scaled, deleted=False) == key
    assert cache.services[key].edited == set()  # the HPA scaled: nothing to undo
    edited = _child("Deployment", "d", 3)
    edited["spec"]["template"] = {"spec": {"containers": [{"name": "runner", "image": "evil"}]}}
    assert cache.set_child(edited, deleted=False) == key
    assert cache.services[key].edited == {("Deployment", "d")}


async def test_urgent_keys_are_served_before_status_refreshes() -> None:
    queue = WorkQueue()
    queue.add(("ns", "status-1"))
    queue.add(("ns", "status-2"))
    queue.add(("ns", "spec"), urgent=True)
    queue.add(("ns", "status-2"), urgent=True)  # promoted, served once
    assert await _drain(queue) == [("ns", "spec"), ("ns", "status-2"), ("ns", "status-1")]
    assert queue.idle()


async def test_urgency_survives_a_key_being_processed() -> None:
    queue = WorkQueue()
    queue.add(("ns", "a"))
    key = await queue.get()
    queue.add(("ns", "b"))
    queue.add(("ns", "a"), urgent=True)  # arrives mid-reconcile
    queue.done(key)
    assert await _drain(queue) == [("ns", "a"), ("ns", "b")]


def test_children_are_as_applied_until_someone_else_changes_or_deletes_one() -> None:
    """What the periodic resync checks before it writes anything: generations of children that
    have one, resourceVersions of core Services, and that every child is still there."""
    cache = Cache()
    key = ("ns", "svc")
    cache.set_service(key, {"metadata": {"name": "svc", "namespace": "ns"}})
    deployment = _child("Deployment", "d", 2)
    service = _child("Service", "s", 0)
    del service["metadata"]["generation"]
    service["metadata"]["resourceVersion"] = "100"
    cache.record_applied(key, deployment)
    cache.record_applied(key, service)
    st = cache.services[key]
    both = [("Deployment", "d"), ("Service", "s")]
    assert st.as_applied(both)
    # Status updates of a Deployment leave its generation: still as applied.
    cache.set_child({**deployment, "status": {"readyReplicas": 1}}, deleted=False)
    assert st.as_applied(both)
    # A Service edited by someone else has a new resourceVersion and no generation to show it.
    edited = {**service, "metadata": {**service["metadata"], "resourceVersion": "101"}}
    cache.set_child(edited, deleted=False)
    assert not st.as_applied(both)
    cache.record_applied(key, edited)  # applied again
    assert st.as_applied(both)
    cache.set_child(_child("Deployment", "d", 3), deleted=False)  # spec edited
    assert not st.as_applied(both)
    assert not st.as_applied([("Deployment", "never-applied")])


def test_the_cache_holds_the_version_it_recorded_and_no_other() -> None:
    cache = Cache()
    key = ("ns", "svc")
    cache.set_service(key, _service("svc"))
    applied = _child("Deployment", "d", 1)
    applied["metadata"]["resourceVersion"] = "41"
    assert not cache.holds(key, applied)  # nothing recorded yet
    cache.record_applied(key, applied)
    assert cache.holds(key, applied)  # the informer's echo of our own apply
    moved_on = _child("Deployment", "d", 1)
    moved_on["metadata"]["resourceVersion"] = "42"  # the controller wrote its status
    assert not cache.holds(key, moved_on)
    cache.set_child(moved_on, deleted=False)
    assert cache.holds(key, moved_on)
    assert not cache.holds(key, applied)
    unversioned = _child("Deployment", "d", 1)
    assert not cache.holds(key, unversioned)
    stranger = _child("Deployment", "d", 1, service="other")
    stranger["metadata"]["resourceVersion"] = "42"
    assert not cache.holds(("ns", "other"), stranger)  # a service the cache does not know

"""The operator's API client and informers against the real API server of the dev cluster."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
from test_operator_support import install_crd, new_namespace, rsvc, runner

from k8s_helpers import kubectl, kubectl_json
from kuberunner_dev.cluster import ClusterInfo
from kuberunner_operator.credentials import StaticToken
from kuberunner_operator.informer import Informer, Source
from kuberunner_operator.kube import (
    ApiError,
    KubeClient,
    KubeConfig,
    TransportError,
    load_kubeconfig,
)

pytestmark = pytest.mark.cluster


@pytest.fixture
def ns(cluster: ClusterInfo) -> Iterator[str]:
    name = new_namespace(cluster, "kr-kube")
    try:
        yield name
    finally:
        kubectl(cluster, "delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
async def kube(cluster: ClusterInfo) -> AsyncIterator[KubeClient]:
    async with KubeClient(load_kubeconfig(str(cluster.kubeconfig))) as client:
        yield client


def service(ns: str, name: str, data: dict[str, str]) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name, "team": "t"}},
        "spec": {"ports": [{"name": "http", "port": 3000}], "selector": data},
    }


async def test_apply_is_idempotent_and_owned_by_our_field_manager(
    cluster: ClusterInfo, ns: str, kube: KubeClient
) -> None:
    obj = service(ns, "svc-a", {"app": "a"})
    first = await kube.apply(obj)
    second = await kube.apply(obj)
    assert first["metadata"]["uid"] == second["metadata"]["uid"]
    # A no-op apply writes nothing: the resourceVersion does not move.
    assert first["metadata"]["resourceVersion"] == second["metadata"]["resourceVersion"]
    managers = {m["manager"] for m in second["metadata"]["managedFields"]}
    assert managers == {"kuberunner"}
    live = kubectl_json(cluster, "get", "service", "svc-a", "-n", ns)
    assert live["spec"]["selector"] == {"app": "a"}


async def test_apply_takes_fields_back_from_another_manager(
    cluster: ClusterInfo, ns: str, kube: KubeClient
) -> None:
    await kube.apply(service(ns, "svc-b", {"app": "b"}))
    kubectl(
        cluster, "patch", "service", "svc-b", "-n", ns, "-p", '{"spec":{"selector":{"app":"x"}}}'
    )
    live = await kube.apply(service(ns, "svc-b", {"app": "b"}))
    assert live["spec"]["selector"] == {"app": "b"}


async def test_get_list_delete_and_missing_objects(ns: str, kube: KubeClient) -> None:
    assert await kube.get("v1", "Service", "nope", ns) is None
    assert await kube.delete("v1", "Service", "nope", ns) is False
    await kube.apply(service(ns, "svc-c", {"app": "c"}))
    await kube.apply(service(ns, "svc-d", {"app": "d"}))
    found = await kube.list("v1", "Service", ns, label_selector="app=svc-c")
    assert [o["metadata"]["name"] for o in found] == ["svc-c"]
    assert len(await kube.list("v1", "Service", ns, label_selector="team=t")) == 2
    assert await kube.delete("v1", "Service", "svc-c", ns) is True
    assert await kube.get("v1", "Service", "svc-c", ns) is None


async def test_invalid_objects_raise_api_errors_with_the_server_message(
    ns: str, kube: KubeClient
) -> None:
    bad = service(ns, "Bad_Name", {"app": "x"})
    with pytest.raises(ApiError) as err:
        await kube.apply(bad)
    assert err.value.code == 422
    assert "Bad_Name" in err.value.message
    await kube.apply(service(ns, "svc-e", {"app": "e"}))
    with pytest.raises(ApiError) as conflict:
        await kube.create(service(ns, "svc-e", {"app": "e"}))
    assert conflict.value.code == 409


async def test_status_merge_patch_touches_only_status(
    cluster: ClusterInfo, ns: str, kube: KubeClient
) -> None:
    install_crd(cluster)
    body = rsvc("st", [runner("r")])
    body["metadata"]["namespace"] = ns
    created = await kube.create(body)
    live = await kube.patch_status(
        "kuberunner.io/v1alpha1", "RunnerService", "st", ns, {"observedGeneration": 1}
    )
    assert live["status"]["observedGeneration"] == 1
    assert live["metadata"]["generation"] == created["metadata"]["generation"]
    assert live["spec"] == created["spec"]


async def test_watch_streams_changes_after_a_resource_version(ns: str, kube: KubeClient) -> None:
    first = await kube.apply(service(ns, "svc-w", {"app": "w"}))
    seen: list[tuple[str, str]] = []

    async def consume() -> None:
        async for event in kube.watch(
            "v1", "Service", ns, resource_version=first["metadata"]["resourceVersion"]
        ):
            seen.append((event["type"], event["object"]["metadata"]["name"]))
            if event["type"] == "DELETED":
                return

    task = asyncio.create_task(consume())
    await kube.apply(service(ns, "svc-x", {"app": "x"}))
    await kube.delete("v1", "Service", "svc-w", ns)
    await asyncio.wait_for(task, 30)
    assert seen == [("ADDED", "svc-x"), ("DELETED", "svc-w")]


async def test_paged_list_returns_every_object_and_a_version(ns: str, kube: KubeClient) -> None:
    for i in range(5):
        await kube.apply(service(ns, f"svc-p{i}", {"app": "p"}))
    items, version = await kube.list_with_version("v1", "Service", ns, page_size=2)
    assert sorted(o["metadata"]["name"] for o in items) == [f"svc-p{i}" for i in range(5)]
    assert version.isdigit()


async def test_requests_queued_for_a_connection_wait_instead_of_timing_out(
    cluster: ClusterInfo, ns: str
) -> None:
    """A burst bigger than the pool waits its turn: the wait for a free connection is not
    counted in the connect or total timeout (aiohttp counts it in both)."""
    config = load_kubeconfig(str(cluster.kubeconfig))
    finished: list[str] = []
    async with KubeClient(config, max_connections=1, connect_timeout=0.5, timeout=2.0) as client:

        async def hold() -> None:
            # A watch the server closes after 1 s, on the only connection: 1.5 s with TLS.
            await client.get_text(f"/api/v1/namespaces/{ns}/services?watch=1&timeoutSeconds=1")
            finished.append("holder")

        async def queued(i: int) -> None:
            assert await client.get("v1", "Namespace", ns) is not None
            finished.append(f"queued-{i}")

        holder = asyncio.create_task(hold())
        await asyncio.sleep(0.05)  # the holder has the connection
        # Three requests queue behind it; with the old behaviour each failed after 0.5 s.
        await asyncio.gather(holder, *(queued(i) for i in range(3)))
    assert finished[0] == "holder"
    assert sorted(finished[1:]) == ["queued-0", "queued-1", "queued-2"]


async def test_unreachable_server_is_a_transport_error() -> None:
    # Nothing listens on the discard port of this machine.
    async with KubeClient(
        KubeConfig("https://127.0.0.1:9", False, StaticToken(None), "default")
    ) as client:
        with pytest.raises(TransportError, match="GET /api/v1/namespaces/default"):
            await client.get("v1", "Namespace", "default")


async def test_informer_lists_watches_and_reports_what_a_gap_deleted(
    ns: str, kube: KubeClient
) -> None:
    seen: list[tuple[str, str]] = []

    def record(event_type: str, obj: dict[str, object]) -> None:
        meta = obj["metadata"]
        assert isinstance(meta, dict)
        assert obj["kind"] == "Service"  # list items carry no kind; the informer adds it
        seen.append((event_type, str(meta["name"])))

    await kube.apply(service(ns, "svc-i1", {"app": "i"}))
    unlabelled = service(ns, "svc-other", {"app": "o"})
    unlabelled["metadata"] = {"name": "svc-other", "namespace": ns}
    await kube.apply(unlabelled)
    informer = Informer(kube, Source("v1", "Service", "team=t"), ns, record)
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 30)
        assert seen == [("ADDED", "svc-i1")]  # the unlabelled Service is filtered by the server
        await kube.apply(service(ns, "svc-i2", {"app": "i"}))
        await kube.delete("v1", "Service", "svc-i1", ns)
        for _ in range(300):
            if ("DELETED", "svc-i1") in seen:
                break
            await asyncio.sleep(0.1)
        assert seen[1:] == [("ADDED", "svc-i2"), ("DELETED", "svc-i1")]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # While nobody watched, svc-i2 was deleted and svc-i3 created: a relist reports both.
    seen.clear()
    await kube.delete("v1", "Service", "svc-i2", ns)
    await kube.apply(service(ns, "svc-i3", {"app": "i"}))
    await informer._relist()
    assert sorted(seen) == [("ADDED", "svc-i3"), ("DELETED", "svc-i2")]

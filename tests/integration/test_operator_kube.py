"""The operator's httpx API client against the real API server of the dev cluster."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from test_operator_support import install_crd, new_namespace, rsvc, runner

from k8s_helpers import kubectl, kubectl_json
from kuberunner_operator.devcluster import ClusterInfo
from kuberunner_operator.kube import ApiError, KubeClient, load_kubeconfig

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

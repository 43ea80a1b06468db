"""The local cluster through the official `kubernetes` Python client, as users' scripts see it:
node shapes, the RunnerService CRD's schema, and the status subresource."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from test_operator_support import install_crd

from kuberunner_dev.cluster import ClusterInfo

GROUP, VERSION, PLURAL = "kuberunner.io", "v1alpha1", "runnerservices"


@pytest.fixture
def api(cluster: ClusterInfo) -> Iterator[client.ApiClient]:
    install_crd(cluster)
    with config.new_client_from_config(config_file=str(cluster.kubeconfig)) as api_client:
        yield api_client


def _service(name: str, **runner: Any) -> dict[str, Any]:
    base = {"name": "r", "runnable": "m:C", "resources": {"cpu": "1"}}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RunnerService",
        "metadata": {"name": name},
        "spec": {"image": "img", "runners": [{**base, **runner}]},
    }


def test_nodes_advertise_the_contracted_shapes(api: client.ApiClient) -> None:
    nodes = {n.metadata.name: n for n in client.CoreV1Api(api).list_node().items}
    gpu = [n for name, n in nodes.items() if name.startswith("kwok-gpu-")]
    cpu = [n for name, n in nodes.items() if name.startswith("kwok-cpu-")]
    assert len(gpu) == 2
    assert len(cpu) == 2
    for node in gpu:
        assert node.status.allocatable["nvidia.com/gpu"] == "8"
        assert node.metadata.labels["nvidia.com/gpu.present"] == "true"
        assert [(t.key, t.effect) for t in node.spec.taints] == [("nvidia.com/gpu", "NoSchedule")]
    for node in cpu:
        assert "nvidia.com/gpu" not in node.status.allocatable
        assert not node.spec.taints
    ready = [c.status for n in nodes.values() for c in n.status.conditions if c.type == "Ready"]
    assert ready == ["True"] * 4


def test_runner_service_defaults_schema_errors_and_status(
    api: client.ApiClient, fresh_namespace: str
) -> None:
    objects = client.CustomObjectsApi(api)
    created = objects.create_namespaced_custom_object(
        GROUP, VERSION, fresh_namespace, PLURAL, _service("ok")
    )
    runner = created["spec"]["runners"][0]
    assert runner["replicas"] == 1  # defaults come from the generated schema
    assert runner["workersPerResource"] == 1

    with pytest.raises(ApiException) as rejected:
        objects.create_namespaced_custom_object(
            GROUP, VERSION, fresh_namespace, PLURAL, _service("bad", replicas=-1)
        )
    assert rejected.value.status == 422
    assert "spec.runners[0].replicas" in json.loads(rejected.value.body)["message"]

    patched = objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, fresh_namespace, PLURAL, "ok", {"status": {"observedGeneration": 1}}
    )
    assert patched["status"]["observedGeneration"] == 1
    assert patched["metadata"]["generation"] == 1  # a status write is not a spec change

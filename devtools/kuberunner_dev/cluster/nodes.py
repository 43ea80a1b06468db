"""The fake nodes of a dev cluster, as Node objects that kwok manages."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

# kwok manages nodes carrying this annotation (see --manage-nodes-with-annotation-selector).
KWOK_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
GPU_RESOURCE = "nvidia.com/gpu"
GPU_LABEL = ("nvidia.com/gpu.present", "true")
# Node addresses only show up in `kubectl get nodes -o wide` and pods' hostIP; nothing routes them.
NODE_NETWORK = ipaddress.IPv4Network("172.30.0.0/16")
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}


@dataclass(frozen=True)
class NodeShape:
    """How many nodes of each kind and what they hold."""

    cpu_nodes: int = 2
    gpu_nodes: int = 2
    gpus_per_node: int = 8
    cpu: str = "8"
    memory: str = "32Gi"
    pods: str = "110"

    def __post_init__(self) -> None:
        if self.cpu_nodes < 0 or self.gpu_nodes < 0:
            raise ValueError("node counts must be >= 0")
        if self.cpu_nodes + self.gpu_nodes == 0:
            raise ValueError("a cluster needs at least one node")
        if self.gpu_nodes and self.gpus_per_node < 1:
            raise ValueError("--gpus-per-node must be >= 1 when there are GPU nodes")


def node_manifest(name: str, shape: NodeShape, gpus: int, address: str) -> dict[str, Any]:
    """A Node with the given resources; a GPU node (gpus > 0) is labelled and tainted."""
    resources = {"cpu": shape.cpu, "memory": shape.memory, "pods": shape.pods}
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
    }
    spec: dict[str, Any] = {}
    if gpus:
        resources[GPU_RESOURCE] = str(gpus)
        labels[GPU_LABEL[0]] = GPU_LABEL[1]
        spec["taints"] = [dict(GPU_TAINT)]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {KWOK_ANNOTATION[0]: KWOK_ANNOTATION[1]},
        },
        "spec": spec,
        # A Node keeps the status it is created with (as when a kubelet registers), and kwok's
        # node-initialize stage keeps existing capacity/allocatable.
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "addresses": [
                {"type": "InternalIP", "address": address},
                {"type": "Hostname", "address": name},
            ],
        },
    }


def node_manifests(shape: NodeShape) -> list[dict[str, Any]]:
    """`kwok-cpu-0..` then `kwok-gpu-0..`, each with its own InternalIP from NODE_NETWORK."""
    names = [(f"kwok-cpu-{i}", 0) for i in range(shape.cpu_nodes)]
    names += [(f"kwok-gpu-{i}", shape.gpus_per_node) for i in range(shape.gpu_nodes)]
    hosts = NODE_NETWORK.hosts()
    return [node_manifest(name, shape, gpus, str(next(hosts))) for name, gpus in names]

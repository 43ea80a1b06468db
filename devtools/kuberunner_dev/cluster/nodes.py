"""The fake nodes of a dev cluster, as Node objects that kwok manages.

Pod placement when the cluster also has a real node (`node.NODE_NAME`): the kwok CPU nodes
carry SIMULATED_TAINT and the kwok GPU nodes GPU_TAINT, so an ordinary pod lands on the real
node and runs for real. Only a pod that tolerates `kuberunner.io/simulated` (or, for the GPU
nodes, `nvidia.com/gpu`) may be placed on a kwok node, where kwok fakes its lifecycle. The real
node advertises a few `nvidia.com/gpu` too, so a GPU-shaped pod can also run for real. Without
a real node the kwok CPU nodes are untainted and take every pod.
"""

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
SIMULATED_TAINT = {"key": "kuberunner.io/simulated", "value": "true", "effect": "NoSchedule"}


@dataclass(frozen=True)
class NodeShape:
    """How many nodes of each kind and what they hold."""

    cpu_nodes: int = 2
    gpu_nodes: int = 2
    gpus_per_node: int = 8
    cpu: str = "8"
    memory: str = "32Gi"
    pods: str = "110"
    real_node: bool = False

    def __post_init__(self) -> None:
        if self.cpu_nodes < 0 or self.gpu_nodes < 0:
            raise ValueError("node counts must be >= 0")
        if self.cpu_nodes + self.gpu_nodes == 0 and not self.real_node:
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
    elif shape.real_node:
        spec["taints"] = [dict(SIMULATED_TAINT)]
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

"""A real local Kubernetes control plane for development and tests (`kuberunner dev cluster`).

etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from the Kubernetes Go
modules, plus kwok simulating CPU and GPU nodes and pod lifecycles.
"""

from kuberunner_operator.devcluster.cluster import (
    ClusterInfo,
    api_client,
    attach_process,
    down,
    info,
    up,
)
from kuberunner_operator.devcluster.health import ClusterStatus, ComponentStatus, status
from kuberunner_operator.devcluster.state import DEFAULT_NAME, ClusterError

__all__ = [
    "DEFAULT_NAME",
    "ClusterError",
    "ClusterInfo",
    "ClusterStatus",
    "ComponentStatus",
    "api_client",
    "attach_process",
    "down",
    "info",
    "status",
    "up",
]

"""A real local Kubernetes control plane for development and tests (`kuberunner dev cluster`).

etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from the Kubernetes Go
modules, kwok simulating CPU and GPU nodes and pod lifecycles, and optionally one real node
(containerd, kubelet, kube-proxy, CoreDNS) where pods really run; `load_images` copies the
project's podman images into it.

The names below load on first use, so that building the CLI (which imports
`kuberunner_dev.cluster.commands`) does not pay for httpx, yaml and ssl.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kuberunner_dev.cluster.cluster import (
        ClusterInfo,
        api_client,
        attach_process,
        down,
        info,
        up,
    )
    from kuberunner_dev.cluster.health import ClusterStatus, ComponentStatus, status
    from kuberunner_dev.cluster.images import load_images
    from kuberunner_dev.cluster.state import DEFAULT_NAME, ClusterError

_EXPORTS = {
    "ClusterInfo": "cluster",
    "api_client": "cluster",
    "attach_process": "cluster",
    "down": "cluster",
    "info": "cluster",
    "up": "cluster",
    "ClusterStatus": "health",
    "ComponentStatus": "health",
    "status": "health",
    "load_images": "images",
    "DEFAULT_NAME": "state",
    "ClusterError": "state",
}

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
    "load_images",
    "status",
    "up",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

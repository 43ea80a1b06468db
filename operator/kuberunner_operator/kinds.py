"""The Kubernetes kinds the operator reads and writes, each defined once: apiVersion, kind,
URL plural and scope. Every other module names a kind through these constants (the
RunnerService's own names come from models.py, where the CRD is generated from)."""

from __future__ import annotations

from dataclasses import dataclass

from kuberunner_operator.models import API_GROUP as GROUP
from kuberunner_operator.models import API_VERSION as VERSION
from kuberunner_operator.models import KIND, PLURAL

__all__ = [
    "CHILD_KINDS",
    "CRD",
    "DEPLOYMENT",
    "EVENT",
    "GROUP",
    "HPA",
    "LATE_KINDS",
    "LEASE",
    "NAMESPACE",
    "PDB",
    "POD",
    "REPLICASET",
    "RUNNER_SERVICE",
    "SERVICE",
    "VERSION",
    "Kind",
    "child_kind",
    "lookup",
]


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The REST path of the collection, or of one object when `name` is given."""
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        parts = [prefix]
        if namespace and self.namespaced:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
        return "/".join(parts)


RUNNER_SERVICE = Kind(f"{GROUP}/{VERSION}", KIND, PLURAL)
DEPLOYMENT = Kind("apps/v1", "Deployment", "deployments")
SERVICE = Kind("v1", "Service", "services")
HPA = Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers")
PDB = Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets")
POD = Kind("v1", "Pod", "pods")
# Read (never written) to find the template of a past revision for autoRollback.
REPLICASET = Kind("apps/v1", "ReplicaSet", "replicasets")
EVENT = Kind("v1", "Event", "events")
LEASE = Kind("coordination.k8s.io/v1", "Lease", "leases")
CRD = Kind(
    "apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False
)
NAMESPACE = Kind("v1", "Namespace", "namespaces", False)

# What a RunnerService owns, in the order they are applied.
CHILD_KINDS = (DEPLOYMENT, SERVICE, HPA, PDB)
# Applied after the rest: they refer to the workloads.
LATE_KINDS = frozenset({HPA.kind, PDB.kind})

_ALL = (
    RUNNER_SERVICE,
    DEPLOYMENT,
    SERVICE,
    HPA,
    PDB,
    POD,
    REPLICASET,
    EVENT,
    LEASE,
    CRD,
    NAMESPACE,
)
_BY_KEY = {(k.api_version, k.kind): k for k in _ALL}
_CHILD_BY_KIND = {k.kind: k for k in CHILD_KINDS}


def lookup(api_version: str, kind: str) -> Kind:
    try:
        return _BY_KEY[(api_version, kind)]
    except KeyError:
        raise KeyError(f"the operator does not handle {api_version} {kind}") from None


def child_kind(kind: str) -> Kind:
    """A child kind by its `kind` alone (children are recorded by kind and name)."""
    return _CHILD_BY_KIND[kind]

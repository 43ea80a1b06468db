"""Deployment, Service, HPA and PDB manifests of one component (pure builders)."""

from __future__ import annotations

from typing import Any

from kuberunner_operator import naming
from kuberunner_operator.models import API_GROUP, API_VERSION, KIND, Autoscaling, DisruptionBudget

Obj = dict[str, Any]

REVISION_HISTORY_LIMIT = 5
DEFAULT_HPA_METRICS: list[Obj] = [
    {
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
    }
]


def owner_reference(service: str, uid: str) -> Obj:
    """Makes the RunnerService the controller of a child, so deletion cascades."""
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "name": service,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(name: str, namespace: str, labels: dict[str, str], owner: Obj) -> Obj:
    return {
        "name": name,
        "namespace": namespace,
        "labels": labels,
        "ownerReferences": [owner],
    }


def deployment(
    meta: Obj,
    selector: dict[str, str],
    template: Obj,
    replicas: int | None,
    strategy: Obj,
    progress_deadline_seconds: int | None = None,
) -> Obj:
    """`replicas` None leaves the field out so an HPA owns it (server-side apply then never
    resets the count, the bug of kserve#3768)."""
    spec: Obj = {
        "selector": {"matchLabels": selector},
        "strategy": strategy,
        "revisionHistoryLimit": REVISION_HISTORY_LIMIT,
        "template": template,
    }
    if progress_deadline_seconds is not None:
        spec["progressDeadlineSeconds"] = progress_deadline_seconds
    if replicas is not None:
        spec = {"replicas": replicas, **spec}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}


def service(meta: Obj, selector: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {
                    "name": naming.PORT_NAME,
                    "port": naming.PORT,
                    "targetPort": naming.PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def hpa(meta: Obj, target: str, autoscaling: Autoscaling) -> Obj:
    spec: Obj = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
        "minReplicas": autoscaling.min_replicas,
        "maxReplicas": autoscaling.max_replicas,
        # Spelled out (it is the API default) so the applied object equals the stored one.
        "metrics": autoscaling.metrics if autoscaling.metrics else DEFAULT_HPA_METRICS,
    }
    if autoscaling.behavior:
        spec["behavior"] = autoscaling.behavior
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta,
        "spec": spec,
    }


def pdb(meta: Obj, selector: dict[str, str], budget: DisruptionBudget) -> Obj:
    spec: Obj = {"selector": {"matchLabels": selector}}
    if budget.min_available is not None:
        spec["minAvailable"] = budget.min_available
    else:
        spec["maxUnavailable"] = budget.max_unavailable
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta,
        "spec": spec,
    }

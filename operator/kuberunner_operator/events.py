"""Kubernetes Events posted on a RunnerService at each status transition (best effort)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kuberunner_operator.kinds import EVENT, RUNNER_SERVICE
from kuberunner_operator.kube import ApiError, KubeClient

log = logging.getLogger("kuberunner.operator")

EVENT_TYPES = {"Normal", "Warning"}


def namespace_terminating(exc: ApiError) -> bool:
    """The API server refuses writes into a namespace being deleted: not an error of ours."""
    return exc.code == 403 and "being terminated" in exc.message


def event_body(
    service: Mapping[str, Any], type_: str, reason: str, message: str, instance: str
) -> dict[str, Any]:
    meta = service["metadata"]
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": EVENT.api_version,
        "kind": EVENT.kind,
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": RUNNER_SERVICE.api_version,
            "kind": RUNNER_SERVICE.kind,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_ if type_ in EVENT_TYPES else "Normal",
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "kuberunner-operator"},
        "reportingComponent": "kuberunner.io/operator",
        "reportingInstance": instance[:128],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


async def post_event(
    kube: KubeClient,
    service: Mapping[str, Any],
    type_: str,
    reason: str,
    message: str,
    instance: str,
) -> None:
    try:
        await kube.create(event_body(service, type_, reason, message, instance))
    except ApiError as exc:  # an event is best effort; status already says it
        if not namespace_terminating(exc):
            log.warning("posting event %s failed: %s", reason, exc)

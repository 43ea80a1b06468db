"""Operator metrics: controller-runtime shapes under our prefix.

The metrics server runs in a daemon thread: kopf cancels every task of its event loop on exit,
and a thread keeps answering while the loop is busy.
"""

from __future__ import annotations

import platform
from importlib import metadata

from prometheus_client import Counter, Gauge, Histogram, Info, start_http_server
from prometheus_client import disable_created_metrics as _disable_created

# controller-runtime's reconcile_time_seconds buckets.
RECONCILE_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9,
    1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 40, 50,
    60,
)  # fmt: skip

RESULTS = ("success", "error", "requeue")

_disable_created()  # type: ignore[no-untyped-call]  # untyped upstream

RECONCILE_TOTAL = Counter(
    "kuberunner_operator_reconcile_total",
    "Reconciles of RunnerService objects by result.",
    ["result"],
)
RECONCILE_DURATION = Histogram(
    "kuberunner_operator_reconcile_duration_seconds",
    "Wall time of one RunnerService reconcile.",
    buckets=RECONCILE_BUCKETS,
)
RESYNC_TOTAL = Counter(
    "kuberunner_operator_resync_total",
    "Periodic resyncs by outcome: `unchanged` (every child as last applied: no write) or "
    "`applied` (a child missing or changed by someone else: applied again).",
    ["outcome"],
)
MANAGED_SERVICES = Gauge(
    "kuberunner_operator_managed_services",
    "RunnerService objects this operator currently watches.",
)
QUEUE_DEPTH = Gauge(
    "kuberunner_operator_workqueue_depth",
    "RunnerService keys waiting for a reconcile.",
)
LEADER = Gauge(
    "kuberunner_operator_leader",
    "1 while this process holds the leader Lease (or runs without leader election).",
)
API_REQUESTS = Counter(
    "kuberunner_operator_api_requests_total",
    "Requests sent to the API server (watches not included), by HTTP method and answer code "
    "(`error` when no answer came).",
    ["method", "code"],
)
API_AUTH_FAILURES = Counter(
    "kuberunner_operator_api_auth_failures_total",
    "API requests refused as unauthenticated (401) or forbidden (403).",
    ["code"],
)
API_AUTH_FAILING = Gauge(
    "kuberunner_operator_api_auth_failing",
    "1 while every API request is refused with 401/403 (credentials expired or revoked).",
)
CACHED_OBJECTS = Gauge(
    "kuberunner_operator_cached_objects",
    "Objects held in the operator's cache, by kind of entry (follows the live objects).",
    ["kind"],
)
# Start-up phases last from milliseconds (scheduling) to tens of minutes (a large model load).
STARTUP_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)
RUNNER_STARTUP = Histogram(
    "kuberunner_operator_runner_startup_seconds",
    "Duration of each start-up phase of runner pods (scheduling, image pull, container start, "
    "model load), counted once per pod when it becomes ready.",
    ["phase"],
    buckets=STARTUP_BUCKETS,
)
ROLLOUT_STALLED = Gauge(
    "kuberunner_operator_rollout_stalled",
    "1 while a runner's new revision has made no progress for its rollout.progressDeadline.",
    ["namespace", "service", "runner"],
)
BUILD_INFO = Info("kuberunner_operator_build", "Versions of the running operator.")

for _result in RESULTS:
    RECONCILE_TOTAL.labels(result=_result)


def forget_service(namespace: str, service: str) -> None:
    """Drop the per-runner series of a deleted RunnerService."""
    for metric in ROLLOUT_STALLED.collect():
        for sample in metric.samples:
            labels = sample.labels
            if labels.get("namespace") == namespace and labels.get("service") == service:
                ROLLOUT_STALLED.remove(namespace, service, labels["runner"])


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


BUILD_INFO.info(
    {
        "version": _version("kuberunner"),
        "kopf_version": _version("kopf"),
        "python_version": platform.python_version(),
    }
)


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return (host.strip("[]") or "0.0.0.0", int(port))


def serve_metrics(address: str) -> None:
    host, port = split_address(address)
    start_http_server(port, addr=host)

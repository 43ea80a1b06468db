"""Operator metrics (controller-runtime shapes under our prefix) and the health endpoints.

Both HTTP servers run in daemon threads: kopf cancels every task of its event loop on exit, and
a thread keeps answering while the loop is busy. The health handler reads only plain floats and
booleans written by the loop.
"""

from __future__ import annotations

import platform
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata

from prometheus_client import Counter, Gauge, Histogram, Info, start_http_server
from prometheus_client import disable_created_metrics as _disable_created

from kuberunner_operator.observe import Activity

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
BUILD_INFO = Info("kuberunner_operator_build", "Versions of the running operator.")

for _result in RESULTS:
    RECONCILE_TOTAL.labels(result=_result)


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


class HealthPolicy:
    """Liveness: the event loop ticks, and queued work does not sit unprocessed (a stuck
    reconcile or a dead worker). Readiness: leading and watching. Silent watch streams are
    reconnected by kopf itself (bookmarks and `inactivity_timeout`)."""

    def __init__(self, activity: Activity, stall_after: float, loop_stall_after: float) -> None:
        self.activity = activity
        self.stall_after = stall_after
        self.loop_stall_after = loop_stall_after

    def live(self) -> tuple[bool, str]:
        now = time.monotonic()
        act = self.activity
        if now - act.heartbeat > self.loop_stall_after:
            return False, "event loop stalled"
        stuck = act.pending_since and now - act.pending_since > self.stall_after
        if act.leading and stuck and now - act.last_reconcile > self.stall_after:
            return False, "work queued but no reconcile finished recently"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        ok, why = self.live()
        if not ok:
            return ok, why
        if not self.activity.leading:
            return False, "standby: not the leader"
        if not self.activity.watching:
            return False, "starting watches"
        return True, "ok"


def serve_health(address: str, policy: HealthPolicy) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/healthz":
                ok, why = policy.live()
            elif self.path.split("?")[0] == "/readyz":
                ok, why = policy.ready()
            else:
                ok, why = False, "not found"
                self.send_response(404)
                self._body(why)
                return
            self.send_response(200 if ok else 503)
            self._body(why)

        def _body(self, text: str) -> None:
            data = (text + "\n").encode()
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            return  # probes every few seconds would flood the log

    server = ThreadingHTTPServer(split_address(address), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server

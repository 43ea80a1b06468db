"""The operator's health endpoints: `/healthz` (liveness) and `/readyz` (readiness).

The server runs in a daemon thread, so it keeps answering while the event loop is busy; it reads
only plain floats and booleans that the loop writes (`Activity`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kuberunner_operator.metrics import split_address


@dataclass
class Activity:
    """Timestamps the health endpoints read (from another thread: plain floats only)."""

    heartbeat: float = field(default_factory=time.monotonic)
    last_event: float = 0.0
    last_reconcile: float = 0.0
    pending_since: float = 0.0  # 0 while the queue is empty
    leading: bool = False
    watching: bool = False
    # Since when every API request has been refused as unauthenticated or forbidden
    # (0 while requests succeed): credentials that stopped working.
    auth_failing_since: float = 0.0


class HealthPolicy:
    """Liveness: the event loop ticks, queued work does not sit unprocessed (a stuck reconcile
    or a dead worker), and the API server has not refused our credentials for longer than
    `auth_fail_after` (a restart reloads them from scratch).

    Readiness means "can serve": live, and either a standby waiting for the Lease or a leader
    whose watches have synced. A standby is Ready, so that a Deployment with two replicas
    rolls out and reports both available; which replica leads shows in the Lease, the
    `kuberunner_operator_leader` metric and the log."""

    def __init__(
        self,
        activity: Activity,
        stall_after: float,
        loop_stall_after: float,
        auth_fail_after: float = 300.0,
    ) -> None:
        self.activity = activity
        self.stall_after = stall_after
        self.loop_stall_after = loop_stall_after
        self.auth_fail_after = auth_fail_after

    def live(self) -> tuple[bool, str]:
        now = time.monotonic()
        act = self.activity
        if now - act.heartbeat > self.loop_stall_after:
            return False, "event loop stalled"
        stuck = act.pending_since and now - act.pending_since > self.stall_after
        if act.leading and stuck and now - act.last_reconcile > self.stall_after:
            return False, "work queued but no reconcile finished recently"
        failing = act.auth_failing_since
        if failing and now - failing > self.auth_fail_after:
            return False, f"API server refuses our credentials for {now - failing:.0f}s (401/403)"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        ok, why = self.live()
        if not ok:
            return ok, why
        if not self.activity.leading:
            return True, "ok: standby, waiting for the leader Lease"
        if not self.activity.watching:
            return False, "starting watches"
        return True, "ok: leading"


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

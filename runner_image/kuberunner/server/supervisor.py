"""The supervisor: binds one socket, runs one worker process per worker env, drains on SIGTERM.

Why one shared listening socket rather than SO_REUSEPORT: the supervisor binds the port once
(failing fast if it is taken) and every worker inherits the same accept queue. A worker that
dies loses no queued connections (with SO_REUSEPORT, connections the kernel already hashed to
the dead worker's own queue are reset), a restarted worker joins without rebinding, an idle
worker picks up the next connection instead of a hash deciding regardless of load, and no other
process can bind the port in between.

On drain the workers stop accepting at once and finish what they have, while the supervisor
keeps the listening socket and answers every new connection itself with 503 ``Retry-After``.
Closing a listening socket resets the connections queued in the kernel's backlog, whose
requests were already sent; so at the very end the supervisor first attaches a drop-everything
socket filter (new SYNs are dropped, and the clients' retry finds the port closed: refused),
answers what is still queued, and only then closes.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead

from kuberunner import envvars
from kuberunner.server.state import StateDir
from kuberunner.server.worker_env import WorkerEnv
from kuberunner.wire import RETRY_ELSEWHERE

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1
_SHUTTING_DOWN = b'{"error": "server is shutting down"}'
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 1\r\n%s: 1\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
    % (RETRY_ELSEWHERE.encode(), len(_SHUTTING_DOWN), _SHUTTING_DOWN)
)
MAX_LOAD_FAILURES = 5  # consecutive crashes before becoming ready: give up, let kubelet see it


@dataclass(frozen=True)
class ServeOptions:
    target: str
    name: str
    host: str
    port: int
    allow_pickle: bool = False
    timeout: float | None = None
    max_body_bytes: int = 64 * 1024 * 1024
    graceful_timeout: float = 30.0
    backlog: int = 2048


@dataclass
class _Worker:
    index: int
    env: WorkerEnv
    proc: subprocess.Popen[bytes] | None = None
    failures: int = 0
    last_exit_code: int | None = None
    restart_at: float = 0.0
    became_ready: bool = False
    started_at: float = field(default=0.0)


def bind(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


class Supervisor:
    def __init__(self, options: ServeOptions, envs: list[WorkerEnv]) -> None:
        self.options = options
        self.workers = [_Worker(i, env) for i, env in enumerate(envs)]
        self.state = StateDir.create(options.name, len(envs))
        self.sock: socket.socket | None = None
        self._stop_signal: int | None = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.state.start_draining()  # here, not after the poll: readiness drops at once
        self._stop_signal = signum

    def _command(self, worker: _Worker) -> list[str]:
        assert self.sock is not None
        o = self.options
        cmd = [
            sys.executable, "-m", "kuberunner.server.worker", o.target,
            "--name", o.name,
            "--fd", str(self.sock.fileno()),
            "--index", str(worker.index),
            "--workers", str(len(self.workers)),
            "--state-dir", str(self.state.root),
            "--parent-pid", str(os.getpid()),
            "--max-body-bytes", str(o.max_body_bytes),
            "--graceful-timeout", str(o.graceful_timeout),
        ]  # fmt: skip
        if o.allow_pickle:
            cmd.append("--allow-pickle")
        if o.timeout is not None:
            cmd += ["--timeout", str(o.timeout)]
        return cmd

    def _spawn(self, worker: _Worker) -> None:
        assert self.sock is not None
        env = dict(os.environ)
        env.update(worker.env)  # before the interpreter starts: nothing is imported yet
        env[envvars.PROMETHEUS_MULTIPROC_DIR] = str(self.state.prometheus_dir)
        env[envvars.WORKER_INDEX] = str(worker.index)
        worker.proc = subprocess.Popen(
            self._command(worker), env=env, pass_fds=(self.sock.fileno(),)
        )
        worker.started_at = time.monotonic()
        log.info("started worker %d (pid %d)", worker.index, worker.proc.pid)

    def _reap(self, worker: _Worker) -> None:
        """Notice a dead worker: drop its readiness and live gauges, plan a restart."""
        assert worker.proc is not None
        code = worker.proc.returncode
        worker.last_exit_code = code
        pid = worker.proc.pid
        worker.proc = None
        self.state.mark_not_ready(worker.index)
        mark_process_dead(pid, str(self.state.prometheus_dir))  # type: ignore[no-untyped-call]
        if worker.became_ready:
            worker.failures = 0
        worker.failures += 1
        worker.became_ready = False
        delay = min(30.0, 0.5 * 2 ** (worker.failures - 1))
        worker.restart_at = time.monotonic() + delay
        log.warning(
            "worker %d (pid %d) exited with %s; restarting in %.1fs", worker.index, pid, code, delay
        )

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self.sock = bind(self.options.host, self.options.port, self.options.backlog)
        log.info(
            "runner %r serving on http://%s:%d with %d worker(s), state in %s",
            self.options.name,
            self.options.host,
            self.sock.getsockname()[1],
            len(self.workers),
            self.state.root,
        )
        try:
            for worker in self.workers:
                self._spawn(worker)
            return self._watch()
        finally:
            self._drain()
            self.state.remove()

    def _watch(self) -> int:
        while self._stop_signal is None:
            time.sleep(POLL_SECONDS)
            ready = {int(p.name) for p in self.state.ready_dir.iterdir() if p.name.isdigit()}
            for worker in self.workers:
                if worker.proc is not None:
                    if worker.index in ready:
                        worker.became_ready = True
                    if worker.proc.poll() is not None:
                        self._reap(worker)
                if worker.proc is None and self._stop_signal is None:
                    if worker.failures >= MAX_LOAD_FAILURES and not worker.became_ready:
                        # The last line of the log: the pod's termination message.
                        log.error(
                            "worker %d failed %d times in a row without loading; giving up: %s",
                            worker.index,
                            worker.failures,
                            self.state.load_error(worker.index)
                            or f"last exit code {worker.last_exit_code}",
                        )
                        return 1
                    if time.monotonic() >= worker.restart_at:
                        self._spawn(worker)
        log.info("signal %d: draining", self._stop_signal)
        return 0

    def _drain(self) -> None:
        """Readiness off pod-wide at once; workers finish in-flight requests; newcomers get 503."""
        self.state.start_draining()
        if self.sock is not None:
            self.sock.setblocking(False)  # a worker may win the race for a waiting connection
        running = [w.proc for w in self.workers if w.proc is not None]
        for proc in running:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.options.graceful_timeout + 5
        while any(p.poll() is None for p in running) and time.monotonic() < deadline:
            self._refuse_waiting(POLL_SECONDS)
        for proc in running:
            if proc.poll() is None:
                log.warning("worker pid %d did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.wait()
        if self.sock is not None:
            block_new_connections(self.sock)
            while self._refuse_waiting(0.0):
                pass
            self.sock.close()

    def _refuse_waiting(self, wait: float) -> bool:
        """Answer connections waiting in the backlog with 503; False once none is left."""
        if self.sock is None:
            time.sleep(wait)
            return False
        ready, _, _ = select.select([self.sock], [], [], wait)
        budget = time.monotonic() + POLL_SECONDS  # then look after the workers again
        while ready and time.monotonic() < budget:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # a worker took it, or nothing is left
                return False
            refuse(conn)
            ready, _, _ = select.select([self.sock], [], [], 0)
        return bool(ready)


_SO_ATTACH_FILTER = 26
_DROP_ALL = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))  # BPF: ret #0


def block_new_connections(sock: socket.socket) -> None:
    """Linux: drop incoming SYNs on ``sock`` while its queued connections are still accepted."""
    program = struct.pack("HxxxxxxQ", 1, ctypes.addressof(_DROP_ALL))
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, program)
    except OSError:
        log.debug("socket filters unavailable; queued connections may be reset at close")


def refuse(conn: socket.socket) -> None:
    """Read the request head, answer 503, and close cleanly (FIN, not RST)."""
    conn.settimeout(0.5)
    try:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = conn.recv(65536)
            if not chunk:
                break
            head += chunk
        conn.sendall(REFUSAL)
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(65536):  # unread bytes at close() would turn FIN into RST
            pass
    except OSError:
        pass
    finally:
        conn.close()

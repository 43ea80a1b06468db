"""One runner worker process, ``python -m kuberunner.server.worker``, started by the supervisor.

The supervisor applies this worker's env map entry to the environment of a fresh interpreter,
so the variables (``CUDA_VISIBLE_DEVICES``, thread counts, ``PROMETHEUS_MULTIPROC_DIR``) are in
place before anything is imported, the runnable's module included.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from types import FrameType

import uvicorn

from kuberunner.server.app import RunnerWorkerApp, WorkerSettings
from kuberunner.server.state import StateDir
from kuberunner.serving.uvicorn_config import lean_config

EXIT_LOAD_FAILED = 3
LINGER_SECONDS = 0.3
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """Linux: get SIGTERM if the supervisor dies, so no worker outlives it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


class _WorkerServer(uvicorn.Server):
    """uvicorn's server, with a gentler start of shutdown.

    On SIGTERM it stops accepting at once (the supervisor answers newcomers) but lingers
    ``LINGER_SECONDS`` before uvicorn's own shutdown, which closes connections that carry no
    request yet: a connection accepted just before the signal gets to deliver its request and
    receives a 503 instead of being cut.
    """

    def __init__(self, config: uvicorn.Config, app: RunnerWorkerApp) -> None:
        super().__init__(config)
        self._app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lingering = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._app.draining = True
        if self._lingering or self._loop is None:
            super().handle_exit(sig, frame)  # a second signal, or not started: no linger
            return
        self._lingering = True
        self._loop.call_soon_threadsafe(self._stop_accepting, sig)

    def _stop_accepting(self, sig: int) -> None:
        for server in self.servers:
            server.close()
        assert self._loop is not None
        self._loop.call_later(LINGER_SECONDS, super().handle_exit, sig, None)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="kuberunner-runner-worker")
    p.add_argument("target")
    p.add_argument("--name", required=True)
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--parent-pid", type=int, required=True)
    p.add_argument("--allow-pickle", action="store_true")
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--max-body-bytes", type=int, required=True)
    p.add_argument("--graceful-timeout", type=float, required=True)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _die_with_parent(args.parent_pid)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s worker-{args.index} %(name)s: %(message)s",
        stream=sys.stderr,
    )
    state = StateDir(Path(args.state_dir), args.workers)
    exit_code = 0
    server: _WorkerServer | None = None

    def fatal() -> None:
        nonlocal exit_code
        exit_code = EXIT_LOAD_FAILED
        if server is not None:
            server.should_exit = True

    settings = WorkerSettings(
        target=args.target,
        name=args.name,
        index=args.index,
        allow_pickle=args.allow_pickle,
        timeout=args.timeout,
        max_body_bytes=args.max_body_bytes,
    )
    app = RunnerWorkerApp(settings, state, str(state.prometheus_dir), fatal)
    config = lean_config(app, args.graceful_timeout)
    server = _WorkerServer(config, app)
    sock = socket.socket(fileno=args.fd)
    server.run(sockets=[sock])
    return exit_code


if __name__ == "__main__":
    code = main()
    # A runnable call that never returns would keep its thread, and interpreter exit would wait
    # for it forever; the grace period is over by now, so leave without joining threads.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

"""The one tuned uvicorn configuration of every kuberunner HTTP server (runner workers, API
server), so both get the same event loop, parser, keep-alive and shutdown behaviour."""

from __future__ import annotations

from typing import Any

import uvicorn


def lean_config(app: Any, graceful_timeout: float, **where: Any) -> uvicorn.Config:
    """uvloop and httptools, no access log, no Server header, our own logging. `where` is
    `host`/`port` for a server that binds its own socket (workers get a shared one)."""
    return uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,  # servers sit behind a Service; no X-Forwarded-* rewriting
        timeout_keep_alive=75,  # longer than client pools' idle expiry, so clients close first
        # uvicorn annotates this as int but only hands it to asyncio.wait_for: seconds, float ok.
        timeout_graceful_shutdown=graceful_timeout,  # type: ignore[arg-type]
        **where,
    )

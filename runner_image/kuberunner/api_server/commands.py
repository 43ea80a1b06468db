"""``kuberunner api serve MODULE:svc``: serve a legacy ``Service``'s APIs."""

from __future__ import annotations

import argparse
import logging
import sys
from types import FrameType

from kuberunner.cli import group_parser

log = logging.getLogger(__name__)


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _, commands = group_parser(groups, "api", "Serve a Service's HTTP APIs.")
    serve = commands.add_parser(
        "serve",
        help="Serve the @svc.api endpoints of MODULE:svc; runners come from KUBERUNNER_RUNNER_MAP.",
        description="Serve the @svc.api endpoints of a kuberunner Service.",
    )
    serve.add_argument("target", metavar="MODULE:svc")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=3000)
    serve.add_argument("--max-body-bytes", type=int, default=64 * 1024 * 1024)
    serve.add_argument("--graceful-timeout", type=float, default=25.0)
    serve.set_defaults(func=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    import uvicorn

    from kuberunner.api_server.app import ApiServerApp
    from kuberunner.loader import TargetError, import_target
    from kuberunner.service import Service
    from kuberunner.serving.uvicorn_config import lean_config

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s api-server %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        service = import_target(args.target)
    except (TargetError, ImportError) as exc:
        log.error("cannot load %s: %s", args.target, exc)
        return 2
    if not isinstance(service, Service):
        log.error("%s is a %s, not a kuberunner Service", args.target, type(service).__name__)
        return 2
    app = ApiServerApp(service, max_body_bytes=args.max_body_bytes)
    config = lean_config(app, args.graceful_timeout, host=args.host, port=args.port)

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            app.draining = True  # readiness drops before in-flight requests finish
            super().handle_exit(sig, frame)

    server = _Server(config)
    server.run()
    return 0 if server.started else 1

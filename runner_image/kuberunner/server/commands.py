"""``kuberunner runner serve``: the runner image's entry point."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from kuberunner.cli import group_parser
from kuberunner.server.supervisor import ServeOptions, Supervisor
from kuberunner.server.worker_env import WorkerEnvError, worker_envs

log = logging.getLogger(__name__)


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _, commands = group_parser(groups, "runner", "Serve a runner over HTTP.")
    serve = commands.add_parser(
        "serve",
        help="Serve one runner's methods with one worker process per worker env map entry.",
        description="Serve MODULE:CLASS (a Runnable class or a Runner) as runner NAME.",
    )
    serve.add_argument("target", metavar="MODULE:CLASS")
    serve.add_argument("--name", required=True, help="the runner's name (config section)")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=3000)
    serve.add_argument(
        "--workers", type=int, default=None, help="override the worker count of the worker env map"
    )
    serve.add_argument(
        "--allow-pickle",
        action="store_true",
        help="accept application/x-kuberunner-pickle bodies (unsafe on an open network)",
    )
    serve.add_argument(
        "--timeout", type=float, default=None, help="seconds per request (default: config)"
    )
    serve.add_argument("--max-body-bytes", type=int, default=64 * 1024 * 1024)
    serve.add_argument(
        "--graceful-timeout",
        type=float,
        default=25.0,
        help="seconds in-flight requests get after SIGTERM (keep below the pod's grace period)",
    )
    serve.set_defaults(func=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s supervisor %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        envs = worker_envs(args.target, args.name, os.environ, args.workers)
    except WorkerEnvError as exc:
        log.error("%s", exc)
        return 2
    options = ServeOptions(
        target=args.target,
        name=args.name,
        host=args.host,
        port=args.port,
        allow_pickle=args.allow_pickle,
        timeout=args.timeout,
        max_body_bytes=args.max_body_bytes,
        graceful_timeout=args.graceful_timeout,
    )
    return Supervisor(options, envs).run()

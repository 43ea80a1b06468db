"""`kuberunner operator run`: kopf embedded in our own event loop, behind an optional Lease.

Order of things: logging, metrics and health servers (threads), one API client, then (with
`--leader-elect`) wait for the Lease, then kopf's watch of RunnerServices, our informers for
children and pods, and the reconcile workers. Losing the Lease ends the process with exit
code 1 so Kubernetes restarts it as a standby.
"""

from __future__ import annotations

import sys

# kopf imports the `kubernetes` client at import time whenever it is installed, although this
# process never uses it. The operator image does not install it; a development environment
# does (the tests use it), and hiding it there keeps the operator's RSS as in the image
# (~10 MB less, P9). Only the operator process imports this module.
if "kubernetes" not in sys.modules:
    sys.modules["kubernetes"] = None  # type: ignore[assignment]

import argparse
import asyncio
import contextlib
import logging
import time

import kopf

from kuberunner_operator import handlers, metrics, retry
from kuberunner_operator.cache import Cache
from kuberunner_operator.health import Activity, HealthPolicy, serve_health
from kuberunner_operator.kube import KubeClient, load_config
from kuberunner_operator.leader import LeaderElector, LeadershipLost
from kuberunner_operator.runtime import Runtime
from kuberunner_operator.settings import LEASE_NAME, OperatorConfig

log = logging.getLogger("kuberunner.operator")

EXIT_LEADERSHIP_LOST = 1


def configure_logging(log_format: str) -> None:
    fmt = kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(verbose=False, log_format=fmt, log_refkey="object")
    # kopf logs every successful watch-handler call at INFO: thousands per minute under load.
    # Failures (WARNING and up) still show.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)


def _publish_cache_sizes(cache: Cache) -> None:
    for kind, count in cache.sizes().items():
        metrics.CACHED_OBJECTS.labels(kind=kind).set(count)


async def _heartbeat(activity: Activity, runtime: Runtime) -> None:
    while True:
        now = time.monotonic()
        activity.heartbeat = now
        if runtime.queue.depth() == 0:
            activity.pending_since = 0.0
        elif not activity.pending_since:
            activity.pending_since = now
        activity.auth_failing_since = runtime.kube.auth.failing_since
        _publish_cache_sizes(runtime.cache)
        await asyncio.sleep(1.0)


async def _serve(config: OperatorConfig) -> int:
    activity = Activity()
    policy = HealthPolicy(
        activity, stall_after=300.0, loop_stall_after=30.0, auth_fail_after=config.auth_fail_after
    )
    metrics.serve_metrics(config.metrics_address)
    health = serve_health(config.health_address, policy)
    kube_config = load_config()
    # The Lease has a client of its own: renewals must not queue behind a burst of reconciles
    # for the shared connections, or a busy leader would miss its renew deadline and exit.
    async with (
        KubeClient(kube_config, max_connections=config.max_connections) as kube,
        KubeClient(kube_config, max_connections=2) as lease_kube,
    ):
        runtime = Runtime(config=config, kube=kube, activity=activity)
        background = [asyncio.create_task(_heartbeat(activity, runtime))]
        elector: LeaderElector | None = None
        if config.leader_elect:
            elector = LeaderElector(
                lease_kube,
                LEASE_NAME,
                config.lease_namespace,
                config.identity,
                lease_duration=config.lease_duration,
                renew_deadline=config.renew_deadline,
                retry_period=config.retry_period,
            )
            await elector.acquire()
        activity.leading = True
        metrics.LEADER.set(1)
        log.info("leading: reconciling as %s", config.identity)

        background += [asyncio.create_task(retry.worker(runtime)) for _ in range(config.workers)]
        background.append(asyncio.create_task(retry.resync_loop(runtime)))
        informers = handlers.informers(runtime)
        background += [asyncio.create_task(informer.run()) for informer in informers]
        ready = asyncio.Event()
        synced = [ready, *(informer.synced for informer in informers)]
        background.append(asyncio.create_task(_mark_watching(synced, activity)))
        operator = asyncio.create_task(
            kopf.operator(
                clusterwide=config.clusterwide,
                namespaces=list(config.namespaces),
                standalone=True,
                registry=handlers.registry,
                ready_flag=ready,
                memo=runtime,
            )
        )
        watched = [operator]
        if elector is not None:
            watched.append(asyncio.create_task(elector.hold()))
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        for task in done:
            exc = task.exception()
            if isinstance(exc, LeadershipLost):
                log.error("leadership lost, exiting: %s", exc)
                code = EXIT_LEADERSHIP_LOST
            elif exc is not None:
                log.error("operator stopped: %r", exc)
                code = 1
        activity.leading = False
        metrics.LEADER.set(0)
        for task in [*watched, *background]:
            task.cancel()
        for task in [*watched, *background]:
            with contextlib.suppress(BaseException):
                await task
        if elector is not None and code == 0:
            await elector.release()
    health.shutdown()
    return code


async def _mark_watching(ready: list[asyncio.Event], activity: Activity) -> None:
    """Ready once kopf and every informer have seen the current state."""
    for flag in ready:
        await flag.wait()
    activity.watching = True


def run_operator(args: argparse.Namespace) -> int:
    """Entry point of `kuberunner operator run` (flags in docs/contracts.md)."""
    config = OperatorConfig.from_args(args)
    configure_logging(config.log_format)
    log.info(
        "starting operator %s (namespaces: %s, leader election: %s)",
        config.identity,
        ",".join(config.namespaces) or "all",
        config.leader_elect,
    )
    return asyncio.run(_serve(config))

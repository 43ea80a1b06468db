"""Operator process settings: the CLI flags of `kuberunner operator run` plus tunables.

Tunables come from `KUBERUNNER_OPERATOR_*` environment variables so the chart and the benchmark
can change them without new flags.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import kopf

from kuberunner_operator.kinds import GROUP

LEASE_NAME = "kuberunner-operator"


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()
    metrics_address: str = "127.0.0.1:8080"
    health_address: str = "127.0.0.1:8081"
    leader_elect: bool = False
    lease_namespace: str = "default"
    log_format: str = "text"
    identity: str = field(default_factory=lambda: f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}")
    # Concurrent reconciles; each is a handful of API calls.
    workers: int = 32
    # Pod and Deployment status events for one service within this window make one reconcile.
    debounce_seconds: float = 1.0
    # How long to wait for an unready runner pod's /readyz answer (0: never ask).
    readyz_timeout: float = 1.0
    # Every service is re-applied this often (with jitter) to repair drift the watches missed.
    resync_seconds: float = 300.0
    # Lease timings, as client-go's defaults.
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    max_connections: int = 32
    # Liveness fails when every API request has been refused (401/403) for this long,
    # although the token was re-read: a restart is the last resort.
    auth_fail_after: float = 300.0

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> OperatorConfig:
        namespaces: list[str] = list(getattr(args, "namespaces", None) or [])
        if getattr(args, "all_namespaces", False):
            namespaces = []
        lease_ns = (
            getattr(args, "lease_namespace", None) or os.environ.get("POD_NAMESPACE") or "default"
        )
        return cls(
            namespaces=tuple(namespaces),
            metrics_address=getattr(args, "metrics_address", None) or cls.metrics_address,
            health_address=getattr(args, "health_address", None) or cls.health_address,
            leader_elect=bool(getattr(args, "leader_elect", False)),
            lease_namespace=lease_ns,
            log_format=getattr(args, "log_format", None) or "text",
            workers=_env_int("KUBERUNNER_OPERATOR_WORKERS", cls.workers),
            debounce_seconds=_env_float("KUBERUNNER_OPERATOR_DEBOUNCE", cls.debounce_seconds),
            readyz_timeout=_env_float("KUBERUNNER_OPERATOR_READYZ_TIMEOUT", cls.readyz_timeout),
            resync_seconds=_env_float("KUBERUNNER_OPERATOR_RESYNC", cls.resync_seconds),
            lease_duration=_env_float("KUBERUNNER_OPERATOR_LEASE_DURATION", cls.lease_duration),
            renew_deadline=_env_float("KUBERUNNER_OPERATOR_RENEW_DEADLINE", cls.renew_deadline),
            retry_period=_env_float("KUBERUNNER_OPERATOR_RETRY_PERIOD", cls.retry_period),
            max_connections=_env_int("KUBERUNNER_OPERATOR_MAX_CONNECTIONS", cls.max_connections),
            auth_fail_after=_env_float("KUBERUNNER_OPERATOR_AUTH_FAIL_AFTER", cls.auth_fail_after),
        )

    def resync_delay(self) -> float:
        """One resync interval with +-20 % jitter so services do not re-apply in lockstep."""
        return self.resync_seconds * random.uniform(0.8, 1.2)


class WatchOnlyDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """Our own prefix, but no essence: kopf builds one (a deep copy of the whole body) on every
    watch event, and it only matters to create/update handlers, which this operator has none
    of (all handlers are `on.event`). Saves most of kopf's per-event CPU.
    Add a changing handler, and this storage must go."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None


def configure_kopf(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """Every kopf knob in one place (called from the single startup handler)."""
    # kopf's only handler is a low-level `on.event`: it keeps no progress and adds no
    # finalizer, so only the diff-base storage, which kopf consults on every event, is set.
    settings.persistence.diffbase_storage = WatchOnlyDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration", v1=False
    )
    # We post our own transition events; kopf posts only warnings and errors.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "kuberunner-operator"
    settings.posting.reporting_instance = config.identity
    settings.posting.event_name_prefix = "kuberunner-"
    # Explicit watch timeouts against silent stream stalls (P1).
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    # kopf watches RunnerServices only (children and pods: informer.py). Its handler only
    # records and enqueues and never blocks, so no per-object limit is needed beyond bounding
    # memory under event floods.
    settings.queueing.worker_limit = 256
    settings.queueing.idle_timeout = 2.0
    # Leader election is ours (a Lease); kopf never pauses for peers.
    settings.peering.standalone = True
    settings.peering.mandatory = False

"""Operator flags to settings, and the Lease arithmetic of leader election (no API calls)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kuberunner_operator.leader import LeaderElector
from kuberunner_operator.settings import OperatorConfig


def _args(**kw: Any) -> argparse.Namespace:
    base: dict[str, Any] = {
        "namespaces": [],
        "all_namespaces": False,
        "metrics_address": None,
        "health_address": None,
        "leader_elect": False,
        "lease_namespace": None,
        "log_format": "text",
    }
    base.update(kw)
    return argparse.Namespace(**base)


def test_default_is_clusterwide_with_loopback_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    config = OperatorConfig.from_args(_args())
    assert config.clusterwide
    assert config.metrics_address == "127.0.0.1:8080"
    assert config.health_address == "127.0.0.1:8081"
    assert config.lease_namespace == "default"


def test_namespaces_and_lease_namespace_from_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "ops")
    config = OperatorConfig.from_args(_args(namespaces=["a", "b"], leader_elect=True))
    assert config.namespaces == ("a", "b")
    assert not config.clusterwide
    assert config.lease_namespace == "ops"
    explicit = OperatorConfig.from_args(_args(lease_namespace="x"))
    assert explicit.lease_namespace == "x"
    assert OperatorConfig.from_args(_args(namespaces=["a"], all_namespaces=True)).clusterwide


def test_tunables_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERUNNER_OPERATOR_WORKERS", "7")
    monkeypatch.setenv("KUBERUNNER_OPERATOR_RESYNC", "100")
    config = OperatorConfig.from_args(_args())
    assert config.workers == 7
    delays = [config.resync_delay() for _ in range(200)]
    assert all(80 <= d <= 120 for d in delays)
    assert len(set(delays)) > 1  # jittered


def _stamp(delta_seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta_seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _elector() -> LeaderElector:
    return LeaderElector(kube=None, name="l", namespace="ns", identity="me")  # type: ignore[arg-type]


def test_a_lease_renewed_recently_by_another_holder_is_taken() -> None:
    spec = {"holderIdentity": "other", "leaseDurationSeconds": 15, "renewTime": _stamp(-5)}
    assert not _elector()._free(spec)


def test_an_expired_empty_or_own_lease_is_free() -> None:
    elector = _elector()
    assert elector._free(
        {"holderIdentity": "other", "leaseDurationSeconds": 15, "renewTime": _stamp(-16)}
    )
    assert elector._free({"holderIdentity": None})
    assert elector._free({"holderIdentity": "me", "renewTime": _stamp(-1)})


def test_taking_over_counts_a_transition_and_renewing_does_not() -> None:
    elector = _elector()
    taken = elector._spec({"holderIdentity": "other", "leaseTransitions": 3, "acquireTime": "t0"})
    assert taken["holderIdentity"] == "me"
    assert taken["leaseTransitions"] == 4
    assert taken["acquireTime"] != "t0"
    renewed = elector._spec(taken)
    assert renewed["leaseTransitions"] == 4
    assert renewed["acquireTime"] == taken["acquireTime"]
    assert renewed["renewTime"] >= taken["renewTime"]

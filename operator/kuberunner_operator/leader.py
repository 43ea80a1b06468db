"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics.

`acquire()` returns once this process holds the Lease; `hold()` renews it every retry period and
raises `LeadershipLost` when no renewal succeeded within the renew deadline (or another holder
took it), so the process exits non-zero and its pod restarts as a standby. Every write is a
compare-and-swap on `resourceVersion`, so two candidates can never both win.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kuberunner_operator.kinds import LEASE
from kuberunner_operator.kube import ApiError, KubeClient

log = logging.getLogger("kuberunner.operator.leader")


class LeadershipLost(Exception):
    pass


def _now() -> datetime:
    return datetime.now(UTC)


def _micro(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(ts: str | None) -> datetime | None:
    if not ts:
        return None
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


@dataclass
class LeaderElector:
    kube: KubeClient
    name: str
    namespace: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    other_holder: str | None = None

    def _spec(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        now = _micro(_now())
        spec = dict(previous or {})
        if spec.get("holderIdentity") != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (
                1 if previous else 0
            )
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=int(self.lease_duration),
            renewTime=now,
        )
        return spec

    def _free(self, spec: dict[str, Any]) -> bool:
        holder = spec.get("holderIdentity")
        if not holder or holder == self.identity:
            return True
        renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        return renewed is None or _now() > renewed + timedelta(seconds=duration)

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the Lease afterwards."""
        lease = await self.kube.get(LEASE.api_version, LEASE.kind, self.name, self.namespace)
        if lease is None:
            body = {
                "apiVersion": LEASE.api_version,
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(None),
            }
            try:
                await self.kube.create(body)
            except ApiError as exc:
                if exc.code == 409:
                    return False
                raise
            return True
        spec = lease.get("spec") or {}
        if not self._free(spec):
            self.other_holder = str(spec.get("holderIdentity"))
            return False
        lease["spec"] = self._spec(spec)
        try:
            await self.kube.replace(lease)
        except ApiError as exc:
            if exc.code == 409:  # somebody else wrote first
                return False
            raise
        return True

    async def acquire(self) -> None:
        log.info("waiting for Lease %s/%s as %s", self.namespace, self.name, self.identity)
        while True:
            try:
                if await self.try_acquire_or_renew():
                    log.info("became leader (Lease %s/%s)", self.namespace, self.name)
                    return
            except Exception as exc:  # network blips must not end a standby
                log.warning("Lease acquire attempt failed: %s", exc)
            await asyncio.sleep(self.retry_period)

    async def hold(self) -> None:
        """Renew forever; raise LeadershipLost when the renew deadline passes."""
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(self.retry_period)
            self.other_holder = None
            try:
                ok = await asyncio.wait_for(self.try_acquire_or_renew(), self.renew_deadline)
            except Exception as exc:
                log.warning("Lease renewal failed: %s", exc)
                ok = False
            if ok:
                last_ok = time.monotonic()
            elif self.other_holder is not None:
                raise LeadershipLost(
                    f"Lease {self.namespace}/{self.name} taken by {self.other_holder}"
                )
            elif time.monotonic() - last_ok > self.renew_deadline:
                raise LeadershipLost(f"could not renew Lease {self.namespace}/{self.name}")

    async def release(self) -> None:
        """Best effort on clean shutdown: clear the holder so a standby takes over at once."""
        lease = await self.kube.get(LEASE.api_version, LEASE.kind, self.name, self.namespace)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        lease["spec"]["holderIdentity"] = None
        lease["spec"]["leaseDurationSeconds"] = 1
        try:
            await self.kube.replace(lease)
        except ApiError as exc:
            log.warning("Lease release failed: %s", exc)

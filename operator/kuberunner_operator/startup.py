"""How a runner pod starts, phase by phase (pure).

The boundaries come from what the cluster reports about the pod and what the runner reports on
/readyz, and follow each other, so the phases always add up to the pod's whole start:

    created --scheduling--> scheduled --image pull--> imagePulled
            --container start--> started --model load--> workersReady

- scheduled: the PodScheduled condition turned True;
- imagePulled: the container's first start (the runtime creates it as soon as its image is
  there; Events would tell pull and create apart, and the operator does not read Events);
- started: when the runner server began loading its workers (its /readyz answer), else the
  container's start;
- workersReady: the pod's Ready condition turned True.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Obj = Mapping[str, Any]

SCHEDULING = "scheduling"
IMAGE_PULL = "image pull"
CONTAINER_START = "container start"
MODEL_LOAD = "model load"
PHASES = (SCHEDULING, IMAGE_PULL, CONTAINER_START, MODEL_LOAD)
# The elapsed time of a phase under way is shown in steps of this many seconds, so that status
# (and the watch event each status write causes) changes at most this often.
ELAPSED_STEP = 5


def step(seconds: float) -> int:
    """`seconds` rounded down to ELAPSED_STEP."""
    return int(max(0.0, seconds) // ELAPSED_STEP * ELAPSED_STEP)


@dataclass(frozen=True)
class Readyz:
    """The runner's /readyz answer (runner_image/kuberunner/server/state.py `readiness`)."""

    ready: bool
    workers: int
    ready_workers: int
    loading: tuple[tuple[int, float], ...] = ()  # (worker index, seconds loading so far)
    failed: tuple[tuple[int, str], ...] = ()  # (worker index, its load error)
    started_at: float | None = None  # epoch seconds the server began loading its workers
    draining: bool = False

    def describe(self) -> str:
        """One line: `workers 1/2 ready, worker 1 loading for 38s`."""
        parts = [f"workers {self.ready_workers}/{self.workers} ready"]
        # In ELAPSED_STEP steps, like every elapsed time that status shows.
        parts += [f"worker {i} loading for {step(s)}s" for i, s in self.loading]
        parts += [f"worker {i} failed: {error}" for i, error in self.failed]
        if self.draining:
            parts.append("shutting down")
        return ", ".join(parts)


def parse_readyz(text: str | None) -> Readyz | None:
    """The /readyz JSON body, or None when it is missing or not that shape."""
    if not text:
        return None
    try:
        body = json.loads(text)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    try:
        loading = tuple((int(w["worker"]), float(w["seconds"])) for w in body.get("loading") or [])
        failed = tuple((int(w["worker"]), str(w["error"])[:200]) for w in body.get("failed") or [])
        started = body.get("startedAt")
        return Readyz(
            ready=bool(body["ready"]),
            workers=int(body["workers"]),
            ready_workers=int(body["readyWorkers"]),
            loading=loading,
            failed=failed,
            started_at=float(started) if isinstance(started, int | float) else None,
            draining=bool(body.get("draining")),
        )
    except (KeyError, TypeError, ValueError):
        return None


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition_true_at(status: Obj, type_: str) -> datetime | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == type_ and condition.get("status") == "True":
            return parse_time(condition.get("lastTransitionTime"))
    return None


def main_container(pod: Obj) -> Obj | None:
    """The status of the pod's first container (the runner or API server)."""
    specs = (pod.get("spec") or {}).get("containers") or []
    name = specs[0].get("name") if specs else None
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for container in statuses:
        if name is None or container.get("name") == name:
            return dict(container)
    return None


def _first_start(container: Obj | None) -> datetime | None:
    if container is None:
        return None
    state = container.get("state") or {}
    last = container.get("lastState") or {}
    times = [
        parse_time((where.get(kind) or {}).get("startedAt"))
        for where, kind in ((state, "running"), (state, "terminated"), (last, "terminated"))
    ]
    known = [t for t in times if t is not None]
    return min(known) if known else None


@dataclass(frozen=True)
class Phases:
    """The boundaries of one pod's start, the phase under way, and each phase's seconds."""

    pod: str
    created: datetime | None
    scheduled: datetime | None
    image_pulled: datetime | None
    started: datetime | None
    workers_ready: datetime | None
    current: str | None  # None once the pod is ready
    seconds: dict[str, int]  # phase -> seconds (so far, in ELAPSED_STEP steps, when under way)

    def slowest(self) -> tuple[str, int] | None:
        if not self.seconds:
            return None
        return max(self.seconds.items(), key=lambda item: (item[1], -PHASES.index(item[0])))

    def elapsed(self) -> int:
        return self.seconds.get(self.current, 0) if self.current else 0


def startup_phases(pod: Obj, readyz: Readyz | None, now: datetime) -> Phases:
    """The phases of `pod`'s start as of `now`."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    created = parse_time(meta.get("creationTimestamp"))
    scheduled = _condition_true_at(status, "PodScheduled")
    pulled = _first_start(main_container(pod))
    started = pulled
    if readyz is not None and readyz.started_at is not None and pulled is not None:
        reported = datetime.fromtimestamp(readyz.started_at, UTC)
        # Clocks of node and operator differ a little: keep the order of the boundaries.
        started = min(max(reported, pulled), now)
    ready = _condition_true_at(status, "Ready")
    boundaries = [created, scheduled, pulled, started, ready]
    seconds: dict[str, int] = {}
    current: str | None = None
    for index, phase in enumerate(PHASES):
        begin, end = boundaries[index], boundaries[index + 1]
        if begin is None:
            continue
        if end is not None:
            seconds[phase] = max(0, round((end - begin).total_seconds()))
        elif current is None and ready is None:
            current = phase
            so_far = max(0.0, (now - begin).total_seconds())
            seconds[phase] = step(so_far)
            break
    return Phases(
        pod=str(meta.get("name", "?")),
        created=created,
        scheduled=scheduled,
        image_pulled=pulled,
        started=started,
        workers_ready=ready,
        current=current,
        seconds=seconds,
    )


_EPOCH = datetime.min.replace(tzinfo=UTC)


def creation_key(pod: Obj) -> tuple[datetime, str]:
    """Orders pods by creation (ties broken by name)."""
    meta = pod.get("metadata") or {}
    return (parse_time(meta.get("creationTimestamp")) or _EPOCH, str(meta.get("name", "")))


def newest_pod(pods: Sequence[Obj]) -> Obj | None:
    """The most recently created pod."""
    return max(pods, key=creation_key) if pods else None

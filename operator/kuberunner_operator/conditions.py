"""metav1.Condition helpers: the Python counterpart of `meta.SetStatusCondition`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from kuberunner_operator.models import Condition

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
CONDITION_TYPES = (READY, PROGRESSING, DEGRADED)


def rfc3339(moment: datetime) -> str:
    """Second precision in UTC, as Kubernetes writes metav1.Time."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def previous_conditions(status: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    """The conditions of a stored status, keyed by type (the list is a map by type)."""
    if not status:
        return {}
    out: dict[str, Mapping[str, Any]] = {}
    for item in status.get("conditions") or []:
        if isinstance(item, Mapping) and isinstance(item.get("type"), str):
            out[item["type"]] = item
    return out


def make_condition(
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
    previous: Mapping[str, Mapping[str, Any]],
) -> Condition:
    """A condition whose lastTransitionTime moves only when its status changes."""
    value: Literal["True", "False", "Unknown"] = (
        "Unknown" if status is None else ("True" if status else "False")
    )
    before = previous.get(type_)
    stamp = rfc3339(now)
    if before is not None and before.get("status") == value:
        kept = before.get("lastTransitionTime")
        if isinstance(kept, str) and kept:
            stamp = kept
    return Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=stamp,
        observed_generation=generation,
    )


def condition_status(conditions: Iterable[Mapping[str, Any]], type_: str) -> str | None:
    """`status` of the condition of that type, or None when absent."""
    for item in conditions:
        if item.get("type") == type_:
            value = item.get("status")
            return value if isinstance(value, str) else None
    return None

"""What rendering produces: the child objects and, per component (each runner and the API
server), what the operator means to run: workers, env map, GPUs, replicas."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Manifest = dict[str, Any]


@dataclass(frozen=True)
class DesiredComponent:
    """One runner (or the API server) as the operator means to run it.

    `invalid` holds the strategy's message when the spec cannot be scheduled; then no objects
    exist for the component and `workers`, `env_map` are empty.
    """

    name: str  # runner name, or naming.API_SERVER_STATUS_NAME
    component: str  # naming.RUNNER_COMPONENT or naming.API_SERVER_COMPONENT
    object_name: str  # Deployment, Service, HPA and PDB name
    url: str
    selector: dict[str, str]
    workers: int = 0
    env_map: dict[str, dict[str, str]] = field(default_factory=dict)
    gpus_per_pod: int = 0
    replicas: int | None = None  # None: an HPA owns the count
    autoscaled: bool = False
    invalid: str | None = None
    auto_rollback: bool = False  # rollout.autoRollback of a runner


@dataclass(frozen=True)
class Rendered:
    """Everything desired for one RunnerService, in apply order."""

    objects: list[Manifest]
    runners: list[DesiredComponent]
    api_server: DesiredComponent | None
    generation: int | None = None

    @property
    def components(self) -> list[DesiredComponent]:
        """Runners, then the API server if any."""
        return [*self.runners, *([self.api_server] if self.api_server else [])]

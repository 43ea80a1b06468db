"""Worker count and per-worker env of a runner pod, from the library's `DefaultStrategy` rules.

The operator and the runner image share this code, so they can never disagree. The runnable
is described by its traits from the spec; user code is never imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kuberunner.strategy import plan_workers, runnable_traits
from kuberunner_operator.models import GPU_RESOURCE, RunnerSpec

# Bounds on one pod's plan. The schema cannot express them (the count depends on traits and
# workersPerResource together), and without them a typo such as `nvidia.com/gpu: 645849` or
# `cpu: "1e18"` makes the operator build an env map too large to apply, or to hold in memory.
MAX_GPUS_PER_POD = 1024
MAX_WORKERS_PER_POD = 256


@dataclass(frozen=True)
class Workers:
    count: int
    env_map: dict[str, dict[str, str]]


def workers_per_resource(runner: RunnerSpec) -> int | float:
    """The spec value with integral numbers as int: for the strategy, `1` and `1.0` differ
    (an int shares one GPU between workers, a float splits GPUs between them)."""
    value = runner.workers_per_resource
    return int(value) if float(value).is_integer() else float(value)


def resource_request(runner: RunnerSpec) -> dict[str, Any]:
    """The runner's resources in the strategy's (and BentoML config's) request shape."""
    request: dict[str, Any] = {}
    res = runner.resources
    if res.cpu is not None:
        request["cpu"] = res.cpu
    if res.memory is not None:
        request["memory"] = res.memory
    if res.nvidia_gpu is not None:
        request[GPU_RESOURCE] = res.nvidia_gpu
    return request


def plan_runner_workers(runner: RunnerSpec) -> Workers:
    """Workers of one pod of the runner; raises `ValueError` (the strategy's message) when
    the combination cannot be scheduled."""
    traits = runnable_traits(
        runner.runnable,
        tuple(runner.supported_resources),
        runner.supports_cpu_multi_threading,
    )
    request = resource_request(runner)
    wpr = workers_per_resource(runner)
    gpus = runner.resources.nvidia_gpu
    if isinstance(gpus, int) and gpus > MAX_GPUS_PER_POD:
        raise ValueError(
            f"runner '{runner.name}' asks for {gpus} {GPU_RESOURCE} per pod; at most "
            f"{MAX_GPUS_PER_POD} are allowed"
        )
    # plan_workers is what DefaultStrategy.get_worker_count/get_worker_env compute, done
    # once (their warnings would otherwise repeat once per worker on every reconcile).
    plan = plan_workers(traits, request, wpr)
    if plan.count > MAX_WORKERS_PER_POD:
        raise ValueError(
            f"runner '{runner.name}' would run {plan.count} worker processes per pod "
            f"(resources {request}, workersPerResource {wpr}); at most {MAX_WORKERS_PER_POD} are "
            "allowed: lower workersPerResource or the resources per pod, and scale with replicas"
        )
    env_map = {str(index): plan.env(index) for index in range(plan.count)}
    return Workers(count=plan.count, env_map=env_map)

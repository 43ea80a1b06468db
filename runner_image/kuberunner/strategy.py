"""Scheduling strategy: how many worker processes a runner gets and what env each one sees.

`DefaultStrategy` returns exactly what BentoML 1.2.20's `DefaultStrategy` returns whenever that
returns something usable (worker count, `CUDA_VISIBLE_DEVICES`, the 9 thread variables in order,
string values). Where BentoML crashes deep inside or returns something that cannot be deployed,
this raises `ValueError` naming the runnable, the resource, the value and what would be valid:

- float `workers_per_resource` on CPU (BentoML: a float worker count, or "Fractional CPU multi
  threading" for multi-threaded runnables);
- float `workers_per_resource` > 1 on GPU (BentoML: a count, then a crash in the env);
- a GPU count that disagrees with the per-worker GPU slices (BentoML: idle GPUs or workers with
  `CUDA_VISIBLE_DEVICES=""`), or fewer GPUs than one worker needs (BentoML: IndexError);
- a worker index outside `range(worker_count)` (BentoML: IndexError, or an env for a worker
  that is never spawned);
- no usable resource (same message idea as BentoML, which raises only in the count).

The module is pure: the only I/O is resolving `None` / `"system"` requests, done by one
injectable `SystemResourceProbe` (default `resources.detect_system_resources`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kuberunner import resources as res
from kuberunner.envvars import CUDA_VISIBLE_DEVICES, THREAD_ENVS

logger = logging.getLogger(__name__)


ResourceRequest = Mapping[str, Any] | str | None


class RunnableTraits(Protocol):
    """What the strategy needs to know about a runnable (a class, or `runnable_traits(...)`)."""

    @property
    def __name__(self) -> str: ...

    @property
    def SUPPORTED_RESOURCES(self) -> tuple[str, ...]: ...

    @property
    def SUPPORTS_CPU_MULTI_THREADING(self) -> bool: ...


def runnable_traits(
    name: str, supported_resources: tuple[str, ...] | list[str], supports_cpu_multi_threading: bool
) -> type:
    """A stand-in runnable class for the operator, which never imports user code."""
    attrs = {
        "SUPPORTED_RESOURCES": tuple(supported_resources),
        "SUPPORTS_CPU_MULTI_THREADING": bool(supports_cpu_multi_threading),
    }
    return type(name, (), attrs)


@dataclass(frozen=True)
class _Resolved:
    cpu: float | None
    gpus: list[int]


@dataclass(frozen=True)
class WorkerPlan:
    """All workers of one runner: either one `CUDA_VISIBLE_DEVICES` per worker, or CPU threads."""

    count: int
    devices: Callable[[int], str] | None  # GPU path: worker index -> CUDA_VISIBLE_DEVICES
    threads: str | None  # CPU path: value of every thread variable
    warnings: tuple[str, ...] = ()  # logged once, by get_worker_count

    def env(self, worker_index: int) -> dict[str, str]:
        if self.devices is not None:
            return {CUDA_VISIBLE_DEVICES: self.devices(worker_index)}
        assert self.threads is not None
        return {CUDA_VISIBLE_DEVICES: "-1", **dict.fromkeys(THREAD_ENVS, self.threads)}


def _name(runnable: object) -> str:
    return str(getattr(runnable, "__name__", runnable))


def _supported(runnable: object) -> tuple[str, ...]:
    value = getattr(runnable, "SUPPORTED_RESOURCES", None)
    if not isinstance(value, tuple | list) or not all(isinstance(v, str) for v in value):
        raise ValueError(
            f"Runnable '{_name(runnable)}': SUPPORTED_RESOURCES is {value!r}; it must be a tuple "
            "of resource names such as ('cpu',) or ('nvidia.com/gpu', 'cpu')"
        )
    return tuple(value)


def _multi_threading(runnable: object) -> bool:
    value = getattr(runnable, "SUPPORTS_CPU_MULTI_THREADING", None)
    if not isinstance(value, bool):
        raise ValueError(
            f"Runnable '{_name(runnable)}': SUPPORTS_CPU_MULTI_THREADING is {value!r}; "
            "it must be True or False"
        )
    return value


def _check_wpr(name: str, wpr: object) -> int | float:
    if isinstance(wpr, bool) or not isinstance(wpr, int | float):
        raise ValueError(
            f"Runnable '{name}': workers_per_resource {wpr!r} must be an int or a float > 0"
        )
    if not math.isfinite(wpr) or wpr <= 0:
        raise ValueError(f"Runnable '{name}': workers_per_resource {wpr!r} must be > 0")
    return wpr


def _resolve(name: str, request: ResourceRequest, system: res.SystemResourceProbe) -> _Resolved:
    # A whole-section "system" means the same as None (BentoML only honours per-key "system").
    if request is None or request == res.SYSTEM:
        found = system()
        return _Resolved(cpu=found.cpu, gpus=list(found.gpus))
    if not isinstance(request, Mapping):
        raise ValueError(
            f"Runnable '{name}': resource request {request!r} must be a mapping, 'system' or None"
        )
    cpu: float | None = None
    gpus: list[int] = []
    for kind, value in request.items():
        try:
            if kind not in res.KNOWN_RESOURCES:
                res.parse_resource(str(kind), value)  # raises: unknown resource
            if kind == res.CPU:
                cpu = system().cpu if value == res.SYSTEM else res.parse_cpu(value)
            elif kind == res.NVIDIA_GPU:
                gpus = list(system().gpus) if value == res.SYSTEM else res.parse_gpu(value)
            elif value != res.SYSTEM:
                res.parse_memory(value)  # validated, ignored by the strategy
        except ValueError as exc:
            raise ValueError(f"Runnable '{name}': {exc}") from None
    return _Resolved(cpu=cpu, gpus=gpus)


def _gpu_plan(name: str, gpus: list[int], wpr: int | float) -> WorkerPlan:
    n = len(gpus)
    if isinstance(wpr, int):
        per_gpu = wpr
        # Computed per worker: a large workers_per_resource must not build a huge table.
        return WorkerPlan(n * wpr, lambda i: str(gpus[i // per_gpu]), None)
    where = f"Runnable '{name}': resource 'nvidia.com/gpu' {gpus} with workers_per_resource {wpr}"
    if wpr > 1:
        raise ValueError(
            f"{where}: a fractional workers_per_resource must be <= 1 (each worker gets "
            "round(1/workers_per_resource) GPUs); use an int to share GPUs between workers"
        )
    inverse = 1 / wpr
    # BentoML gives each worker round(1/wpr) GPUs (banker's rounding); check before rounding
    # so that a tiny wpr cannot overflow.
    if not math.isfinite(inverse) or inverse > n + 1 or round(inverse) > n:
        raise ValueError(
            f"{where}: each worker needs round(1/{wpr}) GPUs but only {n} are assigned; "
            f"valid fractions give each worker at most {n} GPUs (workers_per_resource >= {1 / n})"
        )
    per_worker = round(inverse)
    count = math.ceil(n * wpr)
    slices = [gpus[per_worker * i : per_worker * (i + 1)] for i in range(count)]
    if count != math.ceil(n / per_worker) or not all(slices):
        raise ValueError(
            f"{where}: {count} workers of {per_worker} GPUs each do not cover the {n} GPUs "
            "exactly (GPUs would sit idle or workers would get none); choose a "
            f"workers_per_resource whose inverse divides the GPUs, e.g. 1/{per_worker} with "
            f"{per_worker * count} GPUs"
        )
    return WorkerPlan(count, [",".join(map(str, s)) for s in slices].__getitem__, None)


def _cpu_plan(runnable: object, name: str, cpus: float, wpr: int | float) -> WorkerPlan:
    multi_threading = _multi_threading(runnable)
    if not isinstance(wpr, int):
        raise ValueError(
            f"Runnable '{name}': resource 'cpu' {cpus} with workers_per_resource {wpr}: "
            "CPU workers need an int workers_per_resource (a fraction of a CPU worker "
            "cannot be spawned); fractional values are only valid for GPUs"
        )
    if multi_threading:
        threads = math.ceil(cpus)
        notes: tuple[str, ...] = ()
        if wpr > 1:
            # Kept for parity with BentoML: every worker gets the whole request as threads.
            notes = (
                f"Runnable '{name}': {wpr} multi-threaded workers each get {threads} threads "
                f"(the whole CPU request); the CPU is oversubscribed {wpr} times.",
            )
        return WorkerPlan(wpr, None, str(threads), notes)
    return WorkerPlan(math.ceil(cpus) * wpr, None, "1")


def plan_workers(
    runnable: RunnableTraits | type,
    resource_request: ResourceRequest,
    workers_per_resource: int | float,
    system: res.SystemResourceProbe = res.detect_system_resources,
) -> WorkerPlan:
    """Compute the worker count and every worker's env at once, so they always agree."""
    name = _name(runnable)
    supported = _supported(runnable)
    wpr = _check_wpr(name, workers_per_resource)
    resolved = _resolve(name, resource_request, system)
    if resolved.gpus and res.NVIDIA_GPU in supported:
        return _gpu_plan(name, resolved.gpus, wpr)
    if resolved.cpu is not None and resolved.cpu > 0:
        plan = _cpu_plan(runnable, name, resolved.cpu, wpr)
        if res.CPU not in supported:
            fallback = (
                f"No known supported resource available for {name}, falling back to using CPU."
            )
            plan = dataclasses.replace(plan, warnings=(fallback, *plan.warnings))
        return plan
    raise ValueError(
        f"No known supported resource available for Runnable '{name}': resource request "
        f"{resource_request!r} gives no usable GPU for SUPPORTED_RESOURCES {supported} and no "
        "CPU > 0. Request 'cpu' > 0, GPUs the runnable supports, or leave resources unset to "
        "use the system's."
    )


class Strategy(ABC):
    """How a runner is spread over worker processes; methods are classmethods, as in BentoML."""

    @classmethod
    @abstractmethod
    def get_worker_count(
        cls,
        runnable_class: RunnableTraits | type,
        resource_request: ResourceRequest,
        workers_per_resource: int | float,
    ) -> int: ...

    @classmethod
    @abstractmethod
    def get_worker_env(
        cls,
        runnable_class: RunnableTraits | type,
        resource_request: ResourceRequest,
        workers_per_resource: int | float,
        worker_index: int,
    ) -> dict[str, str]: ...


class DefaultStrategy(Strategy):
    """BentoML 1.2.20's default strategy, minus its crashes (see the module docstring)."""

    @classmethod
    def get_worker_count(
        cls,
        runnable_class: RunnableTraits | type,
        resource_request: ResourceRequest,
        workers_per_resource: int | float,
        *,
        system: res.SystemResourceProbe = res.detect_system_resources,
    ) -> int:
        plan = plan_workers(runnable_class, resource_request, workers_per_resource, system)
        for warning in plan.warnings:
            logger.warning("%s", warning)
        return plan.count

    @classmethod
    def get_worker_env(
        cls,
        runnable_class: RunnableTraits | type,
        resource_request: ResourceRequest,
        workers_per_resource: int | float,
        worker_index: int,
        *,
        system: res.SystemResourceProbe = res.detect_system_resources,
    ) -> dict[str, str]:
        plan = plan_workers(runnable_class, resource_request, workers_per_resource, system)
        valid = isinstance(worker_index, int) and not isinstance(worker_index, bool)
        if not valid or not 0 <= worker_index < plan.count:
            raise ValueError(
                f"Runnable '{_name(runnable_class)}': worker_index {worker_index!r} is out of "
                f"range; this runner has {plan.count} workers (valid: 0..{plan.count - 1})"
            )
        return plan.env(worker_index)

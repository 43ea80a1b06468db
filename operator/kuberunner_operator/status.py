"""Honest status of a RunnerService, computed from what the cluster reports (pure).

A component (runner or API server) is ready only when its Deployment has observed its current
generation and every desired pod is updated, ready and available, with no old pods left: the
`kubectl rollout status` rule. When it is not ready, the reason is, in this order: RolledBack
(autoRollback returned it to its last Ready revision), RolloutStalled (the Deployment's
progress deadline passed; the message names the pods' cause), a pod's failure (the container's
reason such as OOMKilled or CrashLoopBackOff, the scheduler's Unschedulable or InsufficientGPU,
ReadinessFailing with the runner's /readyz answer), the Deployment's ReplicaFailure, and only
then progress (Starting with the phase and its elapsed time, RollingOut, Pending).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from kuberunner.envvars import CUDA_VISIBLE_DEVICES, OMP_NUM_THREADS
from kuberunner_operator import conditions as cond
from kuberunner_operator import naming
from kuberunner_operator.models import (
    GPU_RESOURCE,
    ComponentStatus,
    RolledBackStatus,
    RunnerServiceStatus,
    StartupStatus,
    WorkerSummary,
)
from kuberunner_operator.render.desired import DesiredComponent, Rendered
from kuberunner_operator.startup import (
    Phases,
    Readyz,
    format_time,
    main_container,
    newest_pod,
    parse_readyz,
    startup_phases,
)

Obj = Mapping[str, Any]

INVALID_SPEC = "InvalidSpec"
UNSCHEDULABLE = "Unschedulable"
INSUFFICIENT_GPU = "InsufficientGPU"  # Unschedulable for want of nvidia.com/gpu
ROLLING_OUT = "RollingOut"
PENDING = "Pending"
STARTING = "Starting"  # scheduled, not ready yet, nothing wrong (the phase says where)
READINESS_FAILING = "ReadinessFailing"  # started (startup probe passed), then not ready
ROLLOUT_STALLED = "RolloutStalled"  # the Deployment's progressDeadlineSeconds passed
ROLLED_BACK = "RolledBack"  # autoRollback returned the runner to its last Ready revision
PROGRESS_DEADLINE = "ProgressDeadlineExceeded"  # the Deployment's own condition reason
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
APPLY_FAILED = "ApplyFailed"  # the API server refused a child (422, 413, 400...)
# Container waiting reasons that mean "this will not fix itself soon", most telling first.
FAILING_WAITING_REASONS = (
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
)
IMAGE_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName"})
# The kernel killed the container at its memory limit (reported before the crash loop it causes).
OOM_KILLED = "OOMKilled"
# Progress reasons: not ready yet, nothing wrong.
IN_PROGRESS = frozenset({ROLLING_OUT, PENDING, STARTING})
# Pod reasons after the container ones, most telling first.
POD_REASONS = (INSUFFICIENT_GPU, UNSCHEDULABLE, READINESS_FAILING)


@dataclass(frozen=True)
class Observed:
    """What the cluster reports for one service's children, as plain API dicts."""

    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)  # by object name
    pods: list[dict[str, Any]] = field(default_factory=list)
    hpas: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Object name -> the API server's message, for children whose apply it refused.
    refused: Mapping[str, str] = field(default_factory=dict)
    # Pod name -> the body of its runner's /readyz answer (for pods started but not ready).
    readyz: Mapping[str, str] = field(default_factory=dict)
    # Runner name -> the rollback the operator made in this pass (autoRollback).
    rollbacks: Mapping[str, RolledBackStatus] = field(default_factory=dict)


class Event(NamedTuple):
    type: str  # Normal or Warning
    reason: str
    message: str


class StatusUpdate(NamedTuple):
    status: dict[str, Any]
    events: list[Event]


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def worker_summaries(plan: DesiredComponent) -> list[WorkerSummary]:
    """Devices and threads per worker; the env map holds only strategy settings (no user
    env, hence never a Secret value)."""
    out = []
    for key, env in sorted(plan.env_map.items(), key=lambda item: int(item[0])):
        threads = env.get(OMP_NUM_THREADS)
        out.append(
            WorkerSummary(
                index=int(key),
                cuda_visible_devices=env.get(CUDA_VISIBLE_DEVICES),
                threads=int(threads) if threads and threads.isdigit() else None,
            )
        )
    return out


def _matches(pod: Obj, selector: Mapping[str, str]) -> bool:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    if meta.get("deletionTimestamp"):
        return False
    return all(labels.get(k) == v for k, v in selector.items())


def last_line(text: str | None, limit: int = 300) -> str:
    """The last non-empty line of a termination message (a traceback's error line)."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:limit] if lines else ""


def _container_problem(pod_name: str, container: Obj, spec: Obj) -> tuple[str, str] | None:
    """(reason, message) for a container that fails, naming the cause: the image that
    cannot be pulled, the memory limit an OOM-killed container hit, the last error line of a
    crashing one."""
    label = f"pod {pod_name} container {container.get('name')}"
    waiting = (container.get("state") or {}).get("waiting") or {}
    last = (container.get("lastState") or {}).get("terminated") or {}
    current = (container.get("state") or {}).get("terminated") or {}
    reason = waiting.get("reason")
    killed = current if current.get("reason") == OOM_KILLED else last
    # An OOM kill is the cause of the crash loop that follows it (a failing pull or config
    # of a later start is not: that is reported as it is).
    if killed.get("reason") == OOM_KILLED and reason in (None, "CrashLoopBackOff"):
        limit = ((spec.get("resources") or {}).get("limits") or {}).get("memory")
        within = f" of {limit}" if limit else ""
        return OOM_KILLED, f"{label}: OOMKilled: it exceeded its memory limit{within}"
    if reason not in FAILING_WAITING_REASONS:
        return None
    message = f"{label}: {reason}"
    if reason in IMAGE_REASONS:
        message += f": image {container.get('image') or spec.get('image')}"
    if waiting.get("message"):
        message += f": {waiting['message']}"
    if last.get("reason"):
        message += f" (last exit: {last['reason']}, code {last.get('exitCode')})"
        error = last_line(last.get("message"))
        if error:
            message += f"; last error: {error}"
    return reason, message


def pod_problem(pod: Obj) -> tuple[str, str] | None:
    """The most telling reason a pod is not running well, with a message, or None."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    name = meta.get("name", "?")
    specs = {c.get("name"): c for c in (pod.get("spec") or {}).get("containers") or []}
    containers = [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]
    found = [
        problem
        for container in containers
        if (problem := _container_problem(name, container, specs.get(container.get("name")) or {}))
    ]
    if found:
        return min(found, key=lambda problem: (_problem_rank(problem), problem))
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == UNSCHEDULABLE
        ):
            said = str(condition.get("message") or "")
            reason = INSUFFICIENT_GPU if f"Insufficient {GPU_RESOURCE}" in said else UNSCHEDULABLE
            return reason, f"pod {name}: {said}".rstrip(": ")
    return None


def _pod_ready(pod: Obj) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def pod_progress(pod: Obj, readyz: Readyz | None, now: datetime) -> tuple[str, str] | None:
    """For a pod that is not ready and not failing: Starting (with the phase under way and
    its elapsed time), or ReadinessFailing once its startup probe passed (with the runner's
    /readyz answer when the operator got one)."""
    if _pod_ready(pod):
        return None
    name = (pod.get("metadata") or {}).get("name", "?")
    container = main_container(pod) or {}
    if container.get("started") and "running" in (container.get("state") or {}):
        said = readyz.describe() if readyz is not None else "no answer from /readyz"
        return READINESS_FAILING, f"pod {name}: started, then its readiness probe failed: {said}"
    phases = startup_phases(pod, readyz, now)
    phase = phases.current or "model load"
    message = f"pod {name}: {phases.elapsed()}s in {phase}"
    if readyz is not None:
        message += f", {readyz.describe()}"
    return STARTING, message


def _stalled(deployment: Obj) -> str | None:
    """The Deployment controller's message when the current revision passed its progress
    deadline (`progressDeadlineSeconds`), else None."""
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if (
            condition.get("type") == "Progressing"
            and condition.get("status") == "False"
            and condition.get("reason") == PROGRESS_DEADLINE
        ):
            return str(condition.get("message") or "")
    return None


def revision_of(deployment: Obj | None) -> int | None:
    annotations = ((deployment or {}).get("metadata") or {}).get("annotations") or {}
    value = annotations.get(REVISION_ANNOTATION)
    return int(value) if isinstance(value, str) and value.isdigit() else None


def _deployment_problem(deployment: Obj) -> tuple[str, str] | None:
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        kind, value = condition.get("type"), condition.get("status")
        if kind == "ReplicaFailure" and value == "True":
            return str(condition.get("reason") or "ReplicaFailure"), str(
                condition.get("message", "")
            )
    return None


def startup_status(phases: Phases) -> StartupStatus:
    slowest = phases.slowest()
    return StartupStatus(
        pod=phases.pod,
        created=format_time(phases.created),
        scheduled=format_time(phases.scheduled),
        image_pulled=format_time(phases.image_pulled),
        started=format_time(phases.started),
        workers_ready=format_time(phases.workers_ready),
        phase=phases.current,
        slowest_phase=slowest[0] if slowest else None,
        slowest_seconds=slowest[1] if slowest else None,
    )


def summary_line(c: ComponentStatus, readyz: Readyz | None = None) -> str:
    """What a person reads at a glance, e.g. `starting: workers 1/2 ready, 38s in model load`."""
    if c.ready:
        return "ready"
    if c.reason == STARTING:
        startup = c.startup
        where = f"{c.ready_replicas}/{c.desired_replicas or 0} pods ready"
        if readyz is not None:
            where = f"workers {readyz.ready_workers}/{readyz.workers} ready"
        if startup is not None and startup.phase:
            elapsed = startup.slowest_seconds if startup.slowest_phase == startup.phase else None
            seconds = f"{elapsed}s " if elapsed is not None else ""
            return f"starting: {where}, {seconds}in {startup.phase}"
        return f"starting: {where}"
    text = f"{c.reason}: {c.message}" if c.message else str(c.reason)
    return text if len(text) <= 160 else text[:157] + "..."


def component_status(
    plan: DesiredComponent,
    observed: Observed,
    previous: Obj | None = None,
    generation: int | None = None,
    now: datetime | None = None,
) -> ComponentStatus:
    """Readiness of one runner or of the API server, with the reason when not ready.
    `previous` is this component's entry of the status before (its last Ready revision and
    rollback are carried over); `now` times the start-up phases."""
    runner = plan.component == naming.RUNNER_COMPONENT
    base: dict[str, Any] = {
        "name": plan.name,
        "deployment": plan.object_name,
        "service": plan.object_name,
        "url": plan.url,
        "workers": plan.workers if runner and not plan.invalid else None,
        "gpus_per_pod": plan.gpus_per_pod if runner and not plan.invalid else None,
        "worker_env": worker_summaries(plan),
        "desired_replicas": plan.replicas,
        "autoscaled": plan.autoscaled,
    }
    previous = previous or {}
    for key, alias in (
        ("last_ready_revision", "lastReadyRevision"),
        ("last_ready_generation", "lastReadyGeneration"),
    ):
        if isinstance(previous.get(alias), int):
            base[key] = previous[alias]
    rolled_back = observed.rollbacks.get(plan.name)
    if rolled_back is None and isinstance(previous.get("rolledBack"), Mapping):
        before = RolledBackStatus.model_validate(previous["rolledBack"])
        # Held until the spec changes: a new generation is a new rollout.
        rolled_back = before if before.generation == generation else None
    if plan.invalid is not None:
        return ComponentStatus(
            **{**base, "deployment": None, "service": None, "url": None},
            reason=INVALID_SPEC,
            message=plan.invalid,
            summary=f"{INVALID_SPEC}: {plan.invalid}"[:160],
        )
    if plan.object_name in observed.refused:
        message = observed.refused[plan.object_name]
        return ComponentStatus(
            **base, reason=APPLY_FAILED, message=message, summary=f"{APPLY_FAILED}: {message}"[:160]
        )
    deployment = observed.deployments.get(plan.object_name)
    if deployment is None:
        message = f"Deployment {plan.object_name} is not created yet"
        return ComponentStatus(**base, reason=PENDING, message=message, summary="pending")
    spec = deployment.get("spec") or {}
    st = deployment.get("status") or {}
    desired = plan.replicas if plan.replicas is not None else _int(spec.get("replicas"), 1)
    total = _int(st.get("replicas"))
    ready = _int(st.get("readyReplicas"))
    updated = _int(st.get("updatedReplicas"))
    available = _int(st.get("availableReplicas"))
    generation_seen = _int((deployment.get("metadata") or {}).get("generation"))
    current = _int(st.get("observedGeneration")) >= generation_seen and (
        plan.replicas is None or _int(spec.get("replicas"), 1) == plan.replicas
    )
    revision = revision_of(deployment)
    pods = [p for p in observed.pods if _matches(p, plan.selector)]
    newest = newest_pod(pods)
    readyz = {
        str((p.get("metadata") or {}).get("name")): answer
        for p in pods
        if (answer := parse_readyz(observed.readyz.get(str((p.get("metadata") or {}).get("name")))))
    }
    extra: dict[str, Any] = {
        "desired_replicas": desired,
        "ready_replicas": ready,
        "updated_replicas": updated,
        "available_replicas": available,
        "revision": revision,
    }
    if newest is not None and now is not None:
        name = str((newest.get("metadata") or {}).get("name"))
        extra["startup"] = startup_status(startup_phases(newest, readyz.get(name), now))
    rolled_out = current and updated >= desired and total <= updated
    healthy = rolled_out and ready >= desired and available >= desired
    if healthy and revision is not None:
        # The template running now is the last one seen Ready (after a rollback too: the
        # Deployment controller gave the old template a new revision number).
        extra["last_ready_revision"] = revision
        if rolled_back is None:
            extra["last_ready_generation"] = generation
    if rolled_back is not None:
        reason = ROLLED_BACK
        message = (
            f"runs revision {rolled_back.revision}, its last Ready one, instead of generation "
            f"{rolled_back.generation}'s revision {rolled_back.failed_revision}: "
            f"{rolled_back.reason}: {rolled_back.message}"
        )
        c = ComponentStatus(
            **{**base, **extra}, rolled_back=rolled_back, reason=reason, message=message
        )
        return c.model_copy(update={"summary": summary_line(c)})
    if healthy:
        return ComponentStatus(**{**base, **extra}, ready=True, summary="ready")

    problems = [pod_problem(p) for p in pods]
    failing = [p for p in problems if p is not None]
    progress = [
        found
        for p, problem in zip(pods, problems, strict=True)
        if problem is None
        and now is not None
        and (found := pod_progress(p, readyz.get(str((p.get("metadata") or {}).get("name"))), now))
    ]
    failing += [p for p in progress if p[0] == READINESS_FAILING]
    starting = [p for p in progress if p[0] == STARTING]
    stalled = _stalled(deployment) if current else None
    if stalled is not None:
        reason = ROLLOUT_STALLED
        message = f"revision {revision or '?'} made no progress: {stalled}"
        causes = sorted(failing, key=_problem_rank) + starting
        if causes:
            cause = causes[0]
            message += f"; cause: {cause[0]}: {cause[1]}"
    elif failing:
        reason, message = min(failing, key=_problem_rank)
        same = sum(1 for r, _ in failing if r == reason)
        if same > 1:
            message = f"{same} pods {reason}; {message}"
    elif (problem := _deployment_problem(deployment)) is not None:
        reason, message = problem
    elif starting:
        reason, message = starting[0]
        if len(starting) > 1:
            message = f"{len(starting)} pods starting; {message}"
    elif not rolled_out:
        reason = ROLLING_OUT
        message = f"{updated} of {desired} pods updated"
    else:
        reason = PENDING
        message = f"{ready} of {desired} pods ready"
    c = ComponentStatus(**{**base, **extra}, reason=reason, message=message)
    newest_answer = readyz.get(str(((newest or {}).get("metadata") or {}).get("name")))
    return c.model_copy(update={"summary": summary_line(c, newest_answer)})


def _problem_rank(problem: tuple[str, str]) -> int:
    reason = problem[0]
    if reason == OOM_KILLED:  # the cause of the crash loop it leads to
        return -1
    if reason in FAILING_WAITING_REASONS:
        return FAILING_WAITING_REASONS.index(reason)
    if reason in POD_REASONS:
        return len(FAILING_WAITING_REASONS) + POD_REASONS.index(reason)
    return len(FAILING_WAITING_REASONS) + len(POD_REASONS)


Labelled = list[tuple[str, ComponentStatus]]  # ("runner NAME" or "api server", status)


def _conditions(
    components: Labelled,
    generation: int | None,
    previous: Obj | None,
    now: datetime,
) -> list[dict[str, Any]]:
    before = cond.previous_conditions(previous)
    not_ready = [(label, c) for label, c in components if not c.ready]
    failing = [(label, c) for label, c in not_ready if c.reason not in IN_PROGRESS]
    moving = [(label, c) for label, c in not_ready if c.reason in IN_PROGRESS]

    def describe(items: Labelled) -> str:
        return "; ".join(f"{label}: {c.reason}: {c.message}" for label, c in items)

    def make(type_: str, status: bool, reason: str, message: str) -> dict[str, Any]:
        condition = cond.make_condition(type_, status, reason, message, generation, now, before)
        return condition.model_dump(by_alias=True, exclude_none=True)

    if not not_ready:
        ready = make(cond.READY, True, "AllReplicasReady", f"{len(components)} components ready")
    else:
        first = (failing or moving)[0][1]
        ready = make(cond.READY, False, str(first.reason), describe(not_ready))
    if moving:
        reason = ROLLING_OUT if any(c.reason == ROLLING_OUT for _, c in moving) else PENDING
        progressing = make(cond.PROGRESSING, True, reason, describe(moving))
    elif failing:
        progressing = make(cond.PROGRESSING, False, str(failing[0][1].reason), describe(failing))
    else:
        progressing = make(cond.PROGRESSING, False, "RolloutComplete", "all replicas updated")
    if failing:
        degraded = make(cond.DEGRADED, True, str(failing[0][1].reason), describe(failing))
    else:
        degraded = make(cond.DEGRADED, False, "AsExpected", "")
    return [ready, progressing, degraded]


def _previous_entries(previous: Obj | None) -> dict[str, Obj]:
    """The components of the status before, by label ("runner NAME" or "api server")."""
    if not previous:
        return {}
    out: dict[str, Obj] = {}
    for entry in previous.get("runners") or []:
        if isinstance(entry, Mapping):
            out[f"runner {entry.get('name')}"] = entry
    api = previous.get("apiServer")
    if isinstance(api, Mapping):
        out["api server"] = api
    return out


def _previous_reasons(previous: Obj | None) -> dict[str, str | None]:
    return {label: entry.get("reason") for label, entry in _previous_entries(previous).items()}


def _events(
    components: Labelled, conditions: list[dict[str, Any]], previous: Obj | None
) -> list[Event]:
    events: list[Event] = []
    was_ready = cond.condition_status(cond.previous_conditions(previous).values(), cond.READY)
    ready = conditions[0]
    if ready["status"] == "True" and was_ready != "True":
        events.append(Event("Normal", "ServiceReady", ready["message"]))
    elif ready["status"] != "True" and was_ready == "True":
        events.append(Event("Warning", "ServiceNotReady", ready["message"]))
    before = _previous_reasons(previous)
    for label, c in components:
        if c.reason is None or c.reason in IN_PROGRESS:
            continue
        if before.get(label) != c.reason:
            events.append(Event("Warning", c.reason, f"{label}: {c.message}"))
    return events


def compute_status(
    rendered: Rendered,
    generation: int | None,
    observed: Observed,
    previous: Obj | None,
    now: datetime,
) -> StatusUpdate:
    """The full `status` body (as the CRD schema stores it) and the events of transitions
    since `previous` (Ready flips; a component newly failing, e.g. InvalidSpec,
    Unschedulable, CrashLoopBackOff)."""
    before = _previous_entries(previous)
    runners = [
        component_status(plan, observed, before.get(f"runner {plan.name}"), generation, now)
        for plan in rendered.runners
    ]
    api = (
        component_status(rendered.api_server, observed, before.get("api server"), generation, now)
        if rendered.api_server
        else None
    )
    components: Labelled = [(f"runner {r.name}", r) for r in runners]
    if api is not None:
        components.append(("api server", api))
    conditions = _conditions(components, generation, previous, now)
    valid = [r for r in runners if r.reason != INVALID_SPEC]
    status = RunnerServiceStatus(
        observed_generation=generation,
        runners=runners,
        api_server=api,
        ready_runners=f"{sum(r.ready for r in runners)}/{len(runners)}",
        workers=sum((r.workers or 0) * (r.desired_replicas or 0) for r in valid),
        gpus=sum((r.gpus_per_pod or 0) * (r.desired_replicas or 0) for r in valid),
        summary=service_summary(components),
    )
    body = status.model_dump(by_alias=True, exclude_none=True)
    body["conditions"] = conditions
    return StatusUpdate(body, _events(components, conditions, previous))


def service_summary(components: Labelled) -> str:
    """`ready`, or the line of the first component that is not (failing ones first)."""
    not_ready = [(label, c) for label, c in components if not c.ready]
    if not not_ready:
        return "ready"
    failing = [(label, c) for label, c in not_ready if c.reason not in IN_PROGRESS]
    label, c = (failing or not_ready)[0]
    return f"{label}: {c.summary or c.reason}"


def invalid_spec_status(
    generation: int | None, message: str, previous: Obj | None, now: datetime
) -> StatusUpdate:
    """Status of a spec the models reject (written before a CRD upgrade, or CEL-free edits):
    not Ready, Degraded with InvalidSpec, nothing rendered."""
    before = cond.previous_conditions(previous)

    def make(type_: str, status: bool) -> dict[str, Any]:
        condition = cond.make_condition(
            type_, status, INVALID_SPEC, message, generation, now, before
        )
        return condition.model_dump(by_alias=True, exclude_none=True)

    conditions = [make(cond.READY, False), make(cond.PROGRESSING, False), make(cond.DEGRADED, True)]
    body = RunnerServiceStatus(observed_generation=generation).model_dump(
        by_alias=True, exclude_none=True
    )
    body["conditions"] = conditions
    events: list[Event] = []
    if cond.condition_status(before.values(), cond.DEGRADED) != "True" or (
        before.get(cond.DEGRADED, {}).get("reason") != INVALID_SPEC
    ):
        events.append(Event("Warning", INVALID_SPEC, message))
    return StatusUpdate(body, events)

"""compute_status: honest readiness, reasons from pods and Deployments, stable conditions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kuberunner_operator.models import RunnerServiceStatus
from kuberunner_operator.render import Rendered, render_service
from kuberunner_operator.status import Observed, compute_status, invalid_spec_status, pod_problem

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def rendered(**extra: Any) -> Rendered:
    spec: dict[str, Any] = {
        "image": "img",
        "runners": [
            {
                "name": "gpu",
                "runnable": "m:G",
                "supportedResources": ["nvidia.com/gpu"],
                "resources": {"nvidia.com/gpu": 4},
                "workersPerResource": 0.5,
                "replicas": 2,
            }
        ],
    }
    spec.update(extra)
    return render_service("demo", "ns", "uid", 7, spec)


def dep(
    desired: int = 2,
    *,
    ready: int | None = None,
    updated: int | None = None,
    total: int | None = None,
    available: int | None = None,
    generation: int = 3,
    observed: int = 3,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    ready = desired if ready is None else ready
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": desired},
        "status": {
            "observedGeneration": observed,
            "replicas": desired if total is None else total,
            "updatedReplicas": desired if updated is None else updated,
            "readyReplicas": ready,
            "availableReplicas": ready if available is None else available,
            "conditions": conditions or [],
        },
    }


def pod(labels: dict[str, str], *, name: str = "p-1", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": dict(labels)}, "status": status}


def observe(
    r: Rendered, *deps: dict[str, Any], pods: list[dict[str, Any]] | None = None
) -> Observed:
    names = [p.object_name for p in r.components]
    return Observed(deployments=dict(zip(names, deps, strict=False)), pods=pods or [])


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in status["conditions"] if c["type"] == type_]
    assert len(found) == 1
    return found[0]


def test_all_ready() -> None:
    r = rendered()
    status, events = compute_status(r, 7, observe(r, dep()), None, T0)
    ready = condition(status, "Ready")
    assert ready["status"] == "True"
    assert ready["observedGeneration"] == 7
    assert ready["lastTransitionTime"] == "2026-01-01T12:00:00Z"
    assert condition(status, "Progressing")["status"] == "False"
    assert condition(status, "Degraded")["status"] == "False"
    assert status["observedGeneration"] == 7
    (runner,) = status["runners"]
    assert runner["ready"] is True
    assert runner["workers"] == 2
    assert runner["gpusPerPod"] == 4
    assert runner["workerEnv"] == [
        {"index": 0, "cudaVisibleDevices": "0,1"},
        {"index": 1, "cudaVisibleDevices": "2,3"},
    ]
    assert (status["readyRunners"], status["workers"], status["gpus"]) == ("1/1", 4, 8)
    assert events == [("Normal", "ServiceReady", ready["message"])]


@pytest.mark.parametrize(
    ("deployment", "reason"),
    [
        (None, "Pending"),
        (dep(observed=2), "RollingOut"),
        (dep(updated=1), "RollingOut"),
        (dep(total=3), "RollingOut"),
        (dep(ready=1), "Pending"),
        (dep(ready=2, available=1), "Pending"),
        (
            dep(
                ready=1,
                conditions=[
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": "took too long",
                    }
                ],
            ),
            "RolloutStalled",
        ),
        (
            dep(
                ready=0,
                conditions=[
                    {
                        "type": "ReplicaFailure",
                        "status": "True",
                        "reason": "FailedCreate",
                        "message": "quota",
                    }
                ],
            ),
            "FailedCreate",
        ),
    ],
)
def test_not_ready_reasons_from_the_deployment(
    deployment: dict[str, Any] | None, reason: str
) -> None:
    r = rendered()
    observed = observe(r, deployment) if deployment else Observed()
    status, _ = compute_status(r, 7, observed, None, T0)
    (runner,) = status["runners"]
    assert runner["ready"] is False
    assert runner["reason"] == reason
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", reason)
    in_progress = reason in ("Pending", "RollingOut")
    assert condition(status, "Progressing")["status"] == ("True" if in_progress else "False")
    assert condition(status, "Degraded")["status"] == ("False" if in_progress else "True")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("0/4 nodes are available: 2 Insufficient nvidia.com/gpu.", "InsufficientGPU"),
        ("0/4 nodes are available: 4 Insufficient memory.", "Unschedulable"),
    ],
)
def test_unschedulable_reports_the_scheduler_message(message: str, reason: str) -> None:
    r = rendered()
    pending = pod(
        r.runners[0].selector,
        phase="Pending",
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
            }
        ],
    )
    status, events = compute_status(r, 7, observe(r, dep(ready=0)), None, T0)
    assert status["runners"][0]["reason"] == "Pending"
    status, events = compute_status(r, 7, observe(r, dep(ready=0), pods=[pending]), None, T0)
    runner = status["runners"][0]
    assert runner["reason"] == reason
    assert runner["message"] == f"pod p-1: {message}"
    assert condition(status, "Degraded")["reason"] == reason
    assert ("Warning", reason, f"runner gpu: {runner['message']}") in events


@pytest.mark.parametrize(
    "reason", ["CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError"]
)
def test_container_waiting_reasons(reason: str) -> None:
    r = rendered()
    failing = pod(
        r.runners[0].selector,
        phase="Running",
        containerStatuses=[
            {
                "name": "runner",
                "ready": False,
                "state": {"waiting": {"reason": reason, "message": "details"}},
                "lastState": {"terminated": {"reason": "Error", "exitCode": 2}},
            }
        ],
    )
    status, _ = compute_status(r, 7, observe(r, dep(ready=1), pods=[failing]), None, T0)
    runner = status["runners"][0]
    assert runner["reason"] == reason
    assert "details" in runner["message"]
    assert "(last exit: Error, code 2)" in runner["message"]


def test_pods_of_other_components_and_terminating_pods_are_ignored() -> None:
    r = rendered()
    crash = {"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "name": "runner"}
    other = pod(
        {**r.runners[0].selector, "kuberunner.io/runner": "other"}, containerStatuses=[crash]
    )
    leaving = pod(r.runners[0].selector, name="old", containerStatuses=[crash])
    leaving["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status, _ = compute_status(r, 7, observe(r, dep(ready=1), pods=[other, leaving]), None, T0)
    assert status["runners"][0]["reason"] == "Pending"


def test_invalid_runner_is_reported_and_never_ready() -> None:
    r = render_service(
        "demo",
        "ns",
        "uid",
        2,
        {
            "image": "img",
            "runners": [
                {"name": "ok", "runnable": "m:A", "resources": {"cpu": 1}},
                {
                    "name": "bad",
                    "runnable": "m:B",
                    "resources": {"cpu": 2},
                    "workersPerResource": 0.5,
                },
            ],
        },
    )
    status, events = compute_status(r, 2, observe(r, dep(1)), None, T0)
    ok, bad = status["runners"]
    assert ok["ready"] is True
    assert bad["reason"] == "InvalidSpec"
    assert "workers_per_resource" in bad["message"]
    assert "deployment" not in bad
    assert condition(status, "Ready")["reason"] == "InvalidSpec"
    assert condition(status, "Degraded")["status"] == "True"
    assert status["readyRunners"] == "1/2"
    assert status["workers"] == 1
    assert [e.reason for e in events] == ["InvalidSpec"]
    # Same state again: no new event, and the transition time stays.
    again, events = compute_status(r, 2, observe(r, dep(1)), status, T1)
    assert events == []
    assert (
        condition(again, "Ready")["lastTransitionTime"]
        == condition(status, "Ready")["lastTransitionTime"]
    )


def test_transition_times_move_only_when_status_flips() -> None:
    r = rendered()
    first, _ = compute_status(r, 7, observe(r, dep(ready=1)), None, T0)
    second, events = compute_status(r, 7, observe(r, dep(ready=0)), first, T1)
    assert condition(second, "Ready")["lastTransitionTime"] == "2026-01-01T12:00:00Z"
    assert events == []
    third, events = compute_status(r, 7, observe(r, dep()), second, T1)
    assert condition(third, "Ready")["lastTransitionTime"] == "2026-01-01T12:05:00Z"
    assert condition(third, "Degraded")["lastTransitionTime"] == "2026-01-01T12:00:00Z"
    assert [e.reason for e in events] == ["ServiceReady"]
    _, events = compute_status(r, 7, observe(r, dep(ready=1)), third, T1 + timedelta(seconds=1))
    assert [(e.type, e.reason) for e in events] == [("Warning", "ServiceNotReady")]


def test_hpa_owned_replicas_come_from_the_deployment() -> None:
    r = rendered(
        runners=[
            {
                "name": "a",
                "runnable": "m:A",
                "resources": {"cpu": 1},
                "autoscaling": {"maxReplicas": 9},
            }
        ]
    )
    status, _ = compute_status(r, 7, observe(r, dep(5)), None, T0)
    runner = status["runners"][0]
    assert (runner["desiredReplicas"], runner["ready"], runner["autoscaled"]) == (5, True, True)
    assert status["workers"] == 5


def test_fixed_replicas_not_yet_applied_are_not_ready() -> None:
    r = rendered()  # wants 2
    status, _ = compute_status(r, 7, observe(r, dep(1)), None, T0)
    assert status["runners"][0]["reason"] == "RollingOut"


def test_scaled_to_zero_is_ready() -> None:
    r = rendered(runners=[{"name": "a", "runnable": "m:A", "resources": {"cpu": 1}, "replicas": 0}])
    status, _ = compute_status(r, 7, observe(r, dep(0)), None, T0)
    assert condition(status, "Ready")["status"] == "True"


def test_api_server_must_be_ready_too() -> None:
    r = rendered(apiServer={"service": "m:svc"})
    status, _ = compute_status(r, 7, observe(r, dep(), dep(1, ready=0)), None, T0)
    assert status["runners"][0]["ready"] is True
    assert status["apiServer"]["reason"] == "Pending"
    ready = condition(status, "Ready")
    assert ready["status"] == "False"
    assert "api server" in ready["message"]
    status, _ = compute_status(r, 7, observe(r, dep(), dep(1)), None, T0)
    assert condition(status, "Ready")["status"] == "True"


def test_status_body_fits_the_status_schema() -> None:
    r = rendered(apiServer={"service": "m:svc"})
    status, _ = compute_status(r, 7, observe(r, dep(ready=1)), None, T0)
    reparsed = RunnerServiceStatus.model_validate(status).model_dump(
        by_alias=True, exclude_none=True
    )
    assert reparsed == status


def test_invalid_spec_status() -> None:
    status, events = invalid_spec_status(4, "spec.runners.0.name: bad", None, T0)
    assert status["observedGeneration"] == 4
    assert condition(status, "Ready")["reason"] == "InvalidSpec"
    assert condition(status, "Degraded")["status"] == "True"
    assert events == [("Warning", "InvalidSpec", "spec.runners.0.name: bad")]
    _, events = invalid_spec_status(4, "spec.runners.0.name: bad", status, T1)
    assert events == []


def test_a_refused_child_is_apply_failed_with_the_server_message() -> None:
    r = rendered()
    name = r.components[0].object_name
    message = f"Deployment {name} refused by the API server: 422 Invalid: volumes[0].name"
    observed = Observed(deployments={name: dep()}, refused={name: message})
    status, events = compute_status(r, 7, observed, None, T0)
    (runner,) = status["runners"]
    assert (runner["ready"], runner["reason"], runner["message"]) == (False, "ApplyFailed", message)
    assert condition(status, "Ready")["status"] == "False"
    assert condition(status, "Degraded")["reason"] == "ApplyFailed"
    assert ("Warning", "ApplyFailed", f"runner gpu: {message}") in events
    # Reported once: the same refusal on the next pass posts no new event.
    _, again = compute_status(r, 7, observed, status, T1)
    assert not any(e.reason == "ApplyFailed" for e in again)


def _failing_pod(container_status: dict[str, Any], limits: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": "p1"},
        "spec": {
            "containers": [
                {"name": "runner", "image": "localhost/r:1", "resources": {"limits": limits}}
            ]
        },
        "status": {"containerStatuses": [{"name": "runner", **container_status}]},
    }


def test_oom_killed_container_is_reported_with_its_memory_limit_before_its_crash_loop() -> None:
    pod = _failing_pod(
        {
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
            "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
        },
        {"memory": "256Mi"},
    )
    assert pod_problem(pod) == (
        "OOMKilled",
        "pod p1 container runner: OOMKilled: it exceeded its memory limit of 256Mi",
    )


def test_crash_loop_names_the_last_error_line_of_the_termination_message() -> None:
    log_tail = (
        'Traceback (most recent call last):\n  File "x.py", line 1\n'
        "ModuleNotFoundError: No module named 'nope'\n\n"
    )
    pod = _failing_pod(
        {
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}},
            "lastState": {"terminated": {"reason": "Error", "exitCode": 1, "message": log_tail}},
        },
        {},
    )
    reason, message = pod_problem(pod) or ("", "")
    assert reason == "CrashLoopBackOff"
    assert message.endswith("last error: ModuleNotFoundError: No module named 'nope'")
    assert "(last exit: Error, code 1)" in message


def test_image_pull_failure_names_the_image() -> None:
    pod = _failing_pod(
        {"image": "localhost/r:missing", "state": {"waiting": {"reason": "ErrImagePull"}}}, {}
    )
    assert pod_problem(pod) == (
        "ErrImagePull",
        "pod p1 container runner: ErrImagePull: image localhost/r:missing",
    )

"""Start-up phases, the reasons of a runner that starts, stalls or is rolled back, and the
pieces of autoRollback and the start-up budget (all pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from kuberunner_operator.models import RunnerServiceSpec, duration_seconds
from kuberunner_operator.reconcile import STARTING_REFRESH, refresh_delay
from kuberunner_operator.render import Rendered, render_service
from kuberunner_operator.rollout import (
    held_deployments,
    readyz_targets,
    revision_template,
    rollback_wanted,
    stalled_cause,
)
from kuberunner_operator.startup import Readyz, parse_readyz, startup_phases
from kuberunner_operator.status import Observed, compute_status, pod_progress

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def spec(**runner: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "llm",
        "runnable": "m:G",
        "supportedResources": ["nvidia.com/gpu"],
        "resources": {"nvidia.com/gpu": 2},
        "replicas": 1,
    }
    base.update(runner)
    return {"image": "img", "runners": [base]}


def rendered(**runner: Any) -> Rendered:
    return render_service("demo", "ns", "uid", 3, spec(**runner))


def start_pod(
    labels: dict[str, str],
    *,
    name: str = "p-1",
    scheduled: float | None = 2,
    container_start: float | None = 30,
    started: bool = False,
    ready: float | None = None,
    ip: str | None = "10.0.0.9",
) -> dict[str, Any]:
    conditions: list[dict[str, Any]] = []
    if scheduled is not None:
        conditions.append(
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": at(scheduled)}
        )
    conditions.append(
        {
            "type": "Ready",
            "status": "True" if ready is not None else "False",
            "lastTransitionTime": at(ready if ready is not None else 0),
        }
    )
    container: dict[str, Any] = {"name": "runner", "started": started, "ready": ready is not None}
    if container_start is not None:
        container["state"] = {"running": {"startedAt": at(container_start)}}
    else:
        container["state"] = {"waiting": {"reason": "ContainerCreating"}}
    status: dict[str, Any] = {
        "phase": "Running" if container_start is not None else "Pending",
        "conditions": conditions,
        "containerStatuses": [container],
    }
    if ip:
        status["podIP"] = ip
    return {
        "metadata": {"name": name, "labels": dict(labels), "creationTimestamp": at(0)},
        "spec": {"containers": [{"name": "runner"}]},
        "status": status,
    }


def deployment(
    *, ready: int = 1, revision: int = 1, stalled: bool = False, updated: int = 1
) -> dict[str, Any]:
    conditions = []
    if stalled:
        conditions.append(
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "x-2" has timed out progressing.',
            }
        )
    return {
        "metadata": {
            "generation": 2,
            "uid": "dep-uid",
            "annotations": {"deployment.kubernetes.io/revision": str(revision)},
        },
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 2,
            "replicas": 1,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": conditions,
        },
    }


LOADING = json.dumps(
    {
        "ready": False,
        "workers": 2,
        "readyWorkers": 1,
        "loading": [{"worker": 1, "seconds": 47.9}],
        "failed": [],
        "startedAt": (T0 + timedelta(seconds=33)).timestamp(),
        "draining": False,
    }
)


# --- phases -------------------------------------------------------------------------------


def test_phases_of_a_ready_pod_add_up_to_its_whole_start() -> None:
    pod = start_pod({}, started=True, ready=100)
    phases = startup_phases(pod, None, T0 + timedelta(seconds=500))
    assert phases.seconds == {
        "scheduling": 2,
        "image pull": 28,
        "container start": 0,
        "model load": 70,
    }
    assert sum(phases.seconds.values()) == 100  # created -> workersReady
    assert phases.current is None
    assert phases.slowest() == ("model load", 70)


def test_the_runner_s_start_time_splits_container_start_from_model_load() -> None:
    pod = start_pod({}, started=True, ready=100)
    phases = startup_phases(pod, parse_readyz(LOADING), T0 + timedelta(seconds=500))
    assert phases.seconds["container start"] == 3
    assert phases.seconds["model load"] == 67
    assert sum(phases.seconds.values()) == 100


@pytest.mark.parametrize(
    ("pod_fields", "phase", "elapsed"),
    [
        ({"scheduled": None, "container_start": None}, "scheduling", 80),
        ({"container_start": None}, "image pull", 75),  # 78 s, shown in 5 s steps
        ({}, "model load", 50),
    ],
)
def test_the_phase_under_way_and_its_elapsed_time(
    pod_fields: dict[str, Any], phase: str, elapsed: int
) -> None:
    phases = startup_phases(start_pod({}, **pod_fields), None, T0 + timedelta(seconds=80))
    assert phases.current == phase
    assert phases.elapsed() == elapsed
    assert phases.workers_ready is None


def test_elapsed_grows_as_time_passes() -> None:
    pod = start_pod({})
    early = startup_phases(pod, None, T0 + timedelta(seconds=40)).elapsed()
    later = startup_phases(pod, None, T0 + timedelta(seconds=100)).elapsed()
    assert (early, later) == (10, 70)


@pytest.mark.parametrize(
    "text", [None, "", "not json", "[]", '{"ready": true}', '{"ready":1,"workers":"x"}']
)
def test_a_readyz_answer_of_another_shape_is_ignored(text: str | None) -> None:
    assert parse_readyz(text) is None


def test_readyz_description_steps_the_seconds() -> None:
    answer = Readyz(ready=False, workers=2, ready_workers=1, loading=((1, 47.9),))
    assert answer.describe() == "workers 1/2 ready, worker 1 loading for 45s"


# --- reasons ------------------------------------------------------------------------------


def runner_entry(
    r: Rendered,
    dep: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    *,
    readyz: dict[str, str] | None = None,
    previous: dict[str, Any] | None = None,
    now: float = 80,
    generation: int = 3,
) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    observed = Observed(
        deployments={r.runners[0].object_name: dep} if dep else {},
        pods=pods,
        readyz=readyz or {},
    )
    status, events = compute_status(r, generation, observed, previous, T0 + timedelta(seconds=now))
    return status["runners"][0], status, events


def test_starting_names_the_phase_elapsed_time_and_workers() -> None:
    r = rendered()
    pod = start_pod(r.runners[0].selector)
    entry, status, events = runner_entry(r, deployment(ready=0), [pod], readyz={"p-1": LOADING})
    assert entry["reason"] == "Starting"
    assert entry["message"] == (
        "pod p-1: 45s in model load, workers 1/2 ready, worker 1 loading for 45s"
    )
    assert entry["summary"] == "starting: workers 1/2 ready, 45s in model load"
    assert status["summary"] == "runner llm: starting: workers 1/2 ready, 45s in model load"
    assert entry["startup"]["phase"] == "model load"
    assert entry["startup"]["started"] == at(33)
    # Starting is progress: Progressing, not Degraded, and no Warning event.
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Progressing"]["status"] == "True"
    assert conditions["Degraded"]["status"] == "False"
    assert not [e for e in events if e[0] == "Warning"]


def test_starting_without_a_readyz_answer_counts_pods() -> None:
    r = rendered()
    entry, _, _ = runner_entry(r, deployment(ready=0), [start_pod(r.runners[0].selector)])
    assert entry["message"] == "pod p-1: 50s in model load"
    assert entry["summary"] == "starting: 0/1 pods ready, 50s in model load"


def test_readiness_failing_after_start_reports_the_readyz_answer() -> None:
    r = rendered()
    pod = start_pod(r.runners[0].selector, started=True)
    entry, _, events = runner_entry(r, deployment(ready=0), [pod], readyz={"p-1": LOADING})
    assert entry["reason"] == "ReadinessFailing"
    assert entry["message"] == (
        "pod p-1: started, then its readiness probe failed: "
        "workers 1/2 ready, worker 1 loading for 45s"
    )
    assert ("Warning", "ReadinessFailing", f"runner llm: {entry['message']}") in events
    entry, _, _ = runner_entry(r, deployment(ready=0), [pod])
    assert entry["message"].endswith("failed: no answer from /readyz")


def test_pod_progress_is_none_for_a_ready_pod() -> None:
    pod = start_pod({}, started=True, ready=60)
    assert pod_progress(pod, None, T0 + timedelta(seconds=90)) is None


def unschedulable(labels: dict[str, str]) -> dict[str, Any]:
    pod = start_pod(labels, scheduled=None, container_start=None, ip=None)
    pod["status"]["conditions"].append(
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/4 nodes are available: 2 Insufficient nvidia.com/gpu.",
        }
    )
    return pod


def test_a_stalled_rollout_names_the_cause_of_its_pods() -> None:
    r = rendered()
    pod = unschedulable(r.runners[0].selector)
    entry, _, _ = runner_entry(r, deployment(ready=0, revision=2), [pod])
    assert entry["reason"] == "InsufficientGPU"  # before the deadline
    entry, _, events = runner_entry(r, deployment(ready=0, revision=2, stalled=True), [pod])
    assert entry["reason"] == "RolloutStalled"
    assert entry["message"] == (
        'revision 2 made no progress: ReplicaSet "x-2" has timed out progressing.; '
        "cause: InsufficientGPU: pod p-1: 0/4 nodes are available: 2 Insufficient nvidia.com/gpu."
    )
    assert stalled_cause(entry["message"]) == "InsufficientGPU"
    assert ("Warning", "RolloutStalled", f"runner llm: {entry['message']}") in events


def test_a_stalled_rollout_of_pods_failing_readiness_says_so() -> None:
    r = rendered()
    pod = start_pod(r.runners[0].selector, started=True)
    entry, _, _ = runner_entry(r, deployment(ready=0, stalled=True), [pod])
    assert entry["reason"] == "RolloutStalled"
    assert "; cause: ReadinessFailing: pod p-1: started, then" in entry["message"]


def test_the_last_ready_revision_is_kept_across_a_failing_rollout() -> None:
    r = rendered()
    ready_pod = start_pod(r.runners[0].selector, started=True, ready=60)
    entry, status, _ = runner_entry(r, deployment(revision=1), [ready_pod], generation=2)
    assert (entry["revision"], entry["lastReadyRevision"], entry["lastReadyGeneration"]) == (
        1,
        1,
        2,
    )
    assert entry["summary"] == "ready"
    assert (entry["startup"]["slowestPhase"], entry["startup"]["slowestSeconds"]) == (
        "model load",
        30,
    )
    entry, _, _ = runner_entry(
        r, deployment(ready=0, revision=2, stalled=True), [], previous=status
    )
    assert (entry["revision"], entry["lastReadyRevision"], entry["lastReadyGeneration"]) == (
        2,
        1,
        2,
    )


def test_rolled_back_is_reported_until_the_spec_changes() -> None:
    r = rendered(rollout={"autoRollback": True})
    previous_entry = {
        "name": "llm",
        "reason": "RolloutStalled",
        "revision": 2,
        "lastReadyRevision": 1,
        "lastReadyGeneration": 2,
        "rolledBack": {
            "generation": 3,
            "failedRevision": 2,
            "revision": 1,
            "reason": "InsufficientGPU",
            "message": "revision 2 made no progress",
        },
    }
    previous = {"runners": [previous_entry]}
    ready_pod = start_pod(r.runners[0].selector, started=True, ready=60)
    entry, status, events = runner_entry(
        r, deployment(revision=3), [ready_pod], previous=previous, generation=3
    )
    assert entry["reason"] == "RolledBack"
    assert entry["ready"] is False  # it runs, but not what the spec asks for
    assert entry["message"] == (
        "runs revision 1, its last Ready one, instead of generation 3's revision 2: "
        "InsufficientGPU: revision 2 made no progress"
    )
    assert entry["lastReadyRevision"] == 3  # the old template, renumbered by the controller
    assert entry["lastReadyGeneration"] == 2
    assert ("Warning", "RolledBack", f"runner llm: {entry['message']}") in events
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Degraded"] == "RolledBack"
    assert held_deployments(r, status, 3) == {r.runners[0].object_name}
    # A new generation is a new rollout: the hold is released.
    entry, status, _ = runner_entry(
        r, deployment(revision=3), [ready_pod], previous=status, generation=4
    )
    assert "reason" not in entry
    assert entry["ready"] is True
    assert "rolledBack" not in entry
    assert held_deployments(r, status, 4) == set()


# --- autoRollback pieces ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auto", "entry", "wanted"),
    [
        (True, {"reason": "RolloutStalled", "revision": 2, "lastReadyRevision": 1}, 1),
        (False, {"reason": "RolloutStalled", "revision": 2, "lastReadyRevision": 1}, None),
        (True, {"reason": "InsufficientGPU", "revision": 2, "lastReadyRevision": 1}, None),
        (True, {"reason": "RolloutStalled", "revision": 2}, None),  # never Ready
        (True, {"reason": "RolloutStalled", "revision": 1, "lastReadyRevision": 1}, None),
        (
            True,
            {
                "reason": "RolloutStalled",
                "revision": 2,
                "lastReadyRevision": 1,
                "rolledBack": {"generation": 3},
            },
            None,
        ),
    ],
)
def test_rollback_is_wanted_only_for_a_stalled_rollout_with_a_ready_past(
    auto: bool, entry: dict[str, Any], wanted: int | None
) -> None:
    plan = rendered(rollout={"autoRollback": auto}).runners[0]
    assert rollback_wanted(plan, entry) == wanted


def test_the_template_of_a_revision_comes_from_its_replica_set() -> None:
    def rs(revision: int, owner: str, image: str) -> dict[str, Any]:
        return {
            "metadata": {
                "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                "ownerReferences": [{"uid": owner}],
            },
            "spec": {
                "template": {
                    "metadata": {"labels": {"app": "x", "pod-template-hash": "abc"}},
                    "spec": {"containers": [{"image": image}]},
                }
            },
        }

    sets = [rs(1, "other", "wrong"), rs(2, "dep-uid", "new"), rs(1, "dep-uid", "old")]
    template = revision_template(sets, "dep-uid", 1)
    assert template == {
        "metadata": {"labels": {"app": "x"}},
        "spec": {"containers": [{"image": "old"}]},
    }
    assert sets[2]["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] == "abc"
    assert revision_template(sets, "dep-uid", 7) is None


def test_readyz_is_asked_of_running_unready_pods_only() -> None:
    r = rendered()
    sel = r.runners[0].selector
    pods = [
        start_pod(sel, name="loading"),
        start_pod(sel, name="ready", started=True, ready=60),
        start_pod(sel, name="pulling", container_start=None),
        start_pod(sel, name="no-ip", ip=None),
        start_pod({"other": "x"}, name="elsewhere"),
    ]
    assert readyz_targets(r, pods) == [("loading", "10.0.0.9")]


# --- start-up budget and progress deadline --------------------------------------------------


def test_startup_timeout_sets_the_startup_probe_on_readyz() -> None:
    def probe(r: Rendered) -> dict[str, Any]:
        dep = next(o for o in r.objects if o["kind"] == "Deployment")
        result: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
        return result

    default = probe(rendered())
    assert default["httpGet"]["path"] == "/readyz"
    assert default["periodSeconds"] * default["failureThreshold"] == 600
    # 8 minutes of loading fit in 15 minutes; 15 minutes of being stuck do not.
    fifteen = probe(rendered(startupTimeout="15m"))
    assert fifteen["periodSeconds"] * fifteen["failureThreshold"] == 900
    assert probe(rendered(startupTimeout="1h30m"))["failureThreshold"] == 1080
    assert probe(rendered(startupTimeout="12s"))["failureThreshold"] == 3  # rounded up


def test_progress_deadline_sets_the_deployment_field() -> None:
    def deadline(r: Rendered) -> Any:
        dep = next(o for o in r.objects if o["kind"] == "Deployment")
        return dep["spec"]["progressDeadlineSeconds"]

    assert deadline(rendered()) == 600
    assert deadline(rendered(rollout={"progressDeadline": "15s"})) == 15
    assert deadline(rendered(rollout={"progressDeadline": "1.5m", "autoRollback": True})) == 90


@pytest.mark.parametrize(
    ("where", "value", "needle"),
    [
        ("startupTimeout", "10 minutes", "pattern"),
        ("startupTimeout", "-5m", "pattern"),
        ("startupTimeout", "5s", "startupTimeout must be between 10s and 24h, not 5s"),
        ("startupTimeout", "25h", "startupTimeout must be between 10s and 24h"),
        ("progressDeadline", "ten", "pattern"),
        ("progressDeadline", "4s", "progressDeadline must be between 5s and 24h, not 4s"),
    ],
)
def test_malformed_or_out_of_range_durations_are_rejected(
    where: str, value: str, needle: str
) -> None:
    body = spec(rollout={where: value}) if where == "progressDeadline" else spec(**{where: value})
    with pytest.raises(ValidationError) as err:
        RunnerServiceSpec.model_validate(body)
    assert needle in str(err.value)


def test_duration_seconds() -> None:
    assert duration_seconds("1h30m") == 5400
    assert duration_seconds("1.5s") == 1.5
    assert duration_seconds("250ms") == 0.25
    with pytest.raises(ValueError, match="not a duration"):
        duration_seconds("m5")


def test_runners_starting_or_failing_readiness_are_refreshed() -> None:
    def status(reason: str, created: float) -> dict[str, Any]:
        return {"runners": [{"name": "r", "reason": reason, "startup": {"created": at(created)}}]}

    now = T0 + timedelta(seconds=10)
    assert refresh_delay(status("Starting", 0), now) == STARTING_REFRESH
    # A pod 2 s old is looked at again once it is 5 s old (plus a second): its elapsed time
    # then shows, and a kwok pod is ready by then and causes nothing more.
    assert refresh_delay(status("Starting", 8), now) == 4.0
    assert refresh_delay(status("ReadinessFailing", 9), now) == STARTING_REFRESH
    assert refresh_delay(status("InsufficientGPU", 0), now) is None
    assert refresh_delay({"runners": [{"name": "r", "ready": True}]}, now) is None

"""The RunnerService models accept what the API accepts and reject what it rejects."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kuberunner_operator.models import RunnerServiceSpec


def spec(**runner: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "r", "runnable": "pkg.mod:Model", "resources": {"cpu": 1}}
    base.update(runner)
    return {"image": "img:1", "runners": [base]}


@pytest.mark.parametrize(
    "runner",
    [
        {},
        {"name": "tok_a"},
        {"name": "a.b-c_d"},
        {"name": "9runner"},
        {"name": "a" * 63},
        {"resources": {"cpu": "500m"}},
        {"resources": {"cpu": "1.5", "memory": "4Gi"}},
        {"resources": {"memory": 1024, "nvidia.com/gpu": 2}},
        {"workersPerResource": 0.5},
        {"workersPerResource": 3},
        {"replicas": 0},
        {"autoscaling": {"minReplicas": 2, "maxReplicas": 2}},
        {"disruptionBudget": {"maxUnavailable": "50%"}},
        {"disruptionBudget": {"minAvailable": 1}},
        {"rollout": {"type": "Recreate"}},
        {"rollout": {"maxSurge": 1}},
        {"methods": {"predict": {"maxBatchSize": 4}, "__call__": {"maxLatencyMs": 5}}},
        {"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
        {"podTemplate": {"volumes": [{"name": "m", "persistentVolumeClaim": {"claimName": "c"}}]}},
    ],
)
def test_accepts(runner: dict[str, Any]) -> None:
    RunnerServiceSpec.model_validate(spec(**runner))


@pytest.mark.parametrize(
    ("runner", "needle"),
    [
        ({"name": "Upper"}, "name"),
        ({"name": "bad name"}, "name"),
        ({"name": "-a"}, "name"),
        ({"name": "a" * 64}, "name"),
        ({"runnable": "no_colon"}, "runnable"),
        ({"runnable": "mod:"}, "runnable"),
        ({"resources": {}}, "cpu or nvidia.com/gpu"),
        ({"resources": {"memory": "1Gi"}}, "cpu or nvidia.com/gpu"),
        ({"resources": {"cpu": "-1"}}, "cpu"),
        ({"resources": {"cpu": "two"}}, "cpu"),
        ({"resources": {"nvidia.com/gpu": 0}}, "nvidia.com/gpu"),
        ({"resources": {"cpu": 1, "disk": 1}}, "disk"),
        ({"workersPerResource": 0}, "workersPerResource"),
        ({"workersPerResource": -1}, "workersPerResource"),
        ({"replicas": -1}, "replicas"),
        ({"autoscaling": {"minReplicas": 3, "maxReplicas": 2}}, "minReplicas"),
        ({"disruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}}, "exactly one"),
        ({"disruptionBudget": {}}, "exactly one"),
        ({"disruptionBudget": {"minAvailable": "fifty"}}, "minAvailable"),
        ({"rollout": {"type": "Recreate", "maxSurge": 1}}, "RollingUpdate"),
        ({"methods": {"not-an-identifier": {}}}, "identifier"),
        ({"supportedResources": ["tpu"]}, "supportedResources"),
        ({"supportedResources": []}, "supportedResources"),
        ({"env": [{"name": "A", "value": "x", "valueFrom": {}}]}, "mutually exclusive"),
        ({"unknownField": 1}, "unknownField"),
    ],
)
def test_rejects(runner: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        RunnerServiceSpec.model_validate(spec(**runner))
    assert needle in str(info.value)


def test_runner_names_must_be_unique() -> None:
    body = spec()
    body["runners"].append(dict(body["runners"][0]))
    with pytest.raises(ValidationError, match="used twice"):
        RunnerServiceSpec.model_validate(body)


def test_at_least_one_runner() -> None:
    with pytest.raises(ValidationError, match="runners"):
        RunnerServiceSpec.model_validate({"image": "img", "runners": []})


def test_defaults_are_the_documented_ones() -> None:
    runner = RunnerServiceSpec.model_validate(spec()).runners[0]
    assert runner.workers_per_resource == 1
    assert runner.replicas == 1
    assert runner.supported_resources == ["cpu"]
    assert runner.supports_cpu_multi_threading is False


def test_round_trip_keeps_camel_case_and_value_from() -> None:
    source = spec(env=[{"name": "T", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}])
    dumped = RunnerServiceSpec.model_validate(source).model_dump(by_alias=True, exclude_none=True)
    runner = dumped["runners"][0]
    assert runner["env"] == source["runners"][0]["env"]
    assert "workersPerResource" in runner
    assert runner["resources"] == {"cpu": 1}

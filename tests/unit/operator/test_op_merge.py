"""The podTemplate/env merge rule: field by field, inner wins, order kept."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from kuberunner_operator.conditions import make_condition, rfc3339
from kuberunner_operator.models import EnvVar, PodTemplate
from kuberunner_operator.render.merge import (
    deep_merge,
    merge_by_key,
    merge_env,
    merge_pod_templates,
)


def by_name(item: dict[str, Any]) -> str:
    return str(item["name"])


@pytest.mark.parametrize(
    ("outer", "inner", "expected"),
    [
        ([], [], []),
        ([{"name": "a", "v": 1}], [], [{"name": "a", "v": 1}]),
        ([], [{"name": "a", "v": 1}], [{"name": "a", "v": 1}]),
        (
            [{"name": "a", "v": 1}, {"name": "b", "v": 1}],
            [{"name": "b", "v": 2}, {"name": "c", "v": 2}],
            [{"name": "a", "v": 1}, {"name": "b", "v": 2}, {"name": "c", "v": 2}],
        ),
        (
            [{"name": "a", "v": 1}, {"name": "b", "v": 1}],
            [{"name": "a", "v": 2}],
            [{"name": "a", "v": 2}, {"name": "b", "v": 1}],
        ),
    ],
)
def test_merge_by_key(
    outer: list[dict[str, Any]], inner: list[dict[str, Any]], expected: list[dict[str, Any]]
) -> None:
    assert merge_by_key(outer, inner, by_name) == expected


@pytest.mark.parametrize(
    ("outer", "inner", "expected"),
    [
        ({"a": 1}, {"b": 2}, {"a": 1, "b": 2}),
        ({"a": {"x": 1, "y": 1}}, {"a": {"y": 2}}, {"a": {"x": 1, "y": 2}}),
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
        ({"a": {"x": 1}}, {"a": 5}, {"a": 5}),
    ],
)
def test_deep_merge(outer: dict[str, Any], inner: dict[str, Any], expected: dict[str, Any]) -> None:
    assert deep_merge(outer, inner) == expected


def test_env_by_name_keeps_value_from() -> None:
    outer = [
        EnvVar(name="A", value="1"),
        EnvVar(name="S", value_from={"secretKeyRef": {"name": "s", "key": "k"}}),
    ]
    inner = [EnvVar(name="A", value="2")]
    assert merge_env(outer, inner) == [
        {"name": "A", "value": "2"},
        {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
    ]


def test_none_templates_and_scalars() -> None:
    empty = merge_pod_templates(None, None)
    assert empty == PodTemplate()
    outer = PodTemplate.model_validate({"serviceAccountName": "a", "labels": {"x": "1"}})
    assert merge_pod_templates(outer, None).service_account_name == "a"
    inner = PodTemplate.model_validate({"serviceAccountName": "b"})
    merged = merge_pod_templates(outer, inner)
    assert merged.service_account_name == "b"
    assert merged.labels == {"x": "1"}


def test_tolerations_merge_by_key_and_effect() -> None:
    outer = PodTemplate.model_validate(
        {
            "tolerations": [
                {"key": "k", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "k", "operator": "Exists", "effect": "NoExecute"},
            ]
        }
    )
    inner = PodTemplate.model_validate(
        {"tolerations": [{"key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute"}]}
    )
    merged = merge_pod_templates(outer, inner)
    assert [(t.operator, t.effect) for t in merged.tolerations] == [
        ("Exists", "NoSchedule"),
        ("Equal", "NoExecute"),
    ]


def test_condition_times() -> None:
    naive = datetime(2026, 1, 1, 12, 0, 0)
    assert rfc3339(naive) == "2026-01-01T12:00:00Z"
    plus_two = datetime(2026, 1, 1, 14, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    assert rfc3339(plus_two) == "2026-01-01T12:00:00Z"
    previous = {"Ready": {"status": "False", "lastTransitionTime": "2025-01-01T00:00:00Z"}}
    kept = make_condition("Ready", False, "Pending", "", 1, naive, previous)
    assert kept.last_transition_time == "2025-01-01T00:00:00Z"
    flipped = make_condition("Ready", True, "AllReplicasReady", "", 1, naive, previous)
    assert flipped.last_transition_time == "2026-01-01T12:00:00Z"
    unknown = make_condition("Ready", None, "Reconciling", "", None, naive, {})
    assert unknown.status == "Unknown"

"""Informer logic without a server: which namespaces to watch, and how stream events are read."""

from __future__ import annotations

from typing import Any, cast

import pytest

from kuberunner_operator.informer import (
    Expired,
    Informer,
    Source,
    is_pattern,
    namespace_filter,
    watch_plan,
)
from kuberunner_operator.kube import ApiError, KubeClient


def test_plain_names_get_one_informer_each_and_no_filter() -> None:
    assert watch_plan(["team-a", "team-b", "team-a"]) == (["team-a", "team-b"], None)


def test_no_namespace_means_cluster_wide_without_filter() -> None:
    assert watch_plan([]) == ([None], None)


def test_patterns_watch_cluster_wide_and_filter() -> None:
    where, wanted = watch_plan(["kr-op-*", "!kr-op-skip"])
    assert where == [None]
    assert wanted is not None
    assert wanted("kr-op-1a2b")
    assert not wanted("kr-op-skip")
    assert not wanted("default")


def test_exclusions_alone_match_everything_else() -> None:
    wanted = namespace_filter(["!kube-system"])
    assert wanted("default")
    assert not wanted("kube-system")


def test_pattern_detection() -> None:
    for pattern in ("team-*", "!x", "ns-?", "[ab]"):
        assert is_pattern(pattern)
    assert not is_pattern("team-a")


def recording_informer() -> tuple[Informer, list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []

    def record(event_type: str, obj: dict[str, Any]) -> None:
        seen.append((event_type, f"{obj['kind']}/{obj['metadata']['name']}"))

    # Only the event handling is exercised: the client is never called.
    informer = Informer(cast(KubeClient, None), Source("v1", "Pod", "a=b"), "ns", record)
    return informer, seen


def test_events_are_delivered_with_their_kind_and_move_the_version() -> None:
    informer, seen = recording_informer()
    pod = {"metadata": {"name": "p", "namespace": "ns", "resourceVersion": "7"}}
    assert informer._handle({"type": "ADDED", "object": pod}, "5") == "7"
    assert seen == [("ADDED", "Pod/p")]


def test_bookmarks_move_the_version_without_an_event() -> None:
    informer, seen = recording_informer()
    mark = {"kind": "Pod", "metadata": {"resourceVersion": "9"}}
    assert informer._handle({"type": "BOOKMARK", "object": mark}, "7") == "9"
    assert seen == []


def test_an_expired_version_asks_for_a_new_list() -> None:
    informer, _ = recording_informer()
    status = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    with pytest.raises(Expired):
        informer._handle({"type": "ERROR", "object": status}, "7")


def test_other_stream_errors_are_api_errors() -> None:
    informer, _ = recording_informer()
    status = {"kind": "Status", "code": 500, "reason": "InternalError"}
    with pytest.raises(ApiError) as err:
        informer._handle({"type": "ERROR", "object": status}, "7")
    assert err.value.code == 500


def test_a_failing_handler_does_not_stop_the_stream() -> None:
    def broken(event_type: str, obj: dict[str, Any]) -> None:
        raise RuntimeError("bug")

    informer = Informer(cast(KubeClient, None), Source("v1", "Pod", "a=b"), "ns", broken)
    pod = {"metadata": {"name": "p", "namespace": "ns", "resourceVersion": "3"}}
    assert informer._handle({"type": "MODIFIED", "object": pod}, "2") == "3"

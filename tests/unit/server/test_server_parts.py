"""Pure pieces of the runner server: worker env map, pod state, metric buckets, rows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from kuberunner.server import rows
from kuberunner.server.metrics import batch_size_buckets
from kuberunner.server.state import StateDir
from kuberunner.server.worker_env import WorkerEnvError, parse_env_map, resize
from kuberunner.wire import Call
from kuberunner_operator.startup import parse_readyz


def test_env_map_is_ordered_and_validated() -> None:
    envs = parse_env_map(json.dumps({"1": {"A": "b"}, "0": {"A": "a"}}))
    assert envs == [{"A": "a"}, {"A": "b"}]
    for bad, fragment in [
        ("nope", "not valid JSON"),
        ("{}", "non-empty object"),
        ('{"0": {}, "2": {}}', "keys must be ['0', '1']"),
        ('{"0": {"A": 1}}', "string values"),
    ]:
        with pytest.raises(WorkerEnvError, match=fragment.replace("[", r"\[")):
            parse_env_map(bad)


def test_workers_flag_resizes_the_env_map_reusing_entries() -> None:
    envs = [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in resize(envs, 3)] == ["0", "1", "0"]
    assert resize(envs, None) == envs
    assert resize([], 2) == [{}, {}]
    with pytest.raises(WorkerEnvError):
        resize(envs, 0)


def test_pod_readiness_needs_every_live_worker_and_no_drain(tmp_path: Path) -> None:
    state = StateDir(tmp_path, 2)
    state.ready_dir.mkdir()
    assert state.pod_ready() == (False, "0/2 workers ready")
    state.mark_ready(0)
    assert state.pod_ready() == (False, "1/2 workers ready")
    (state.ready_dir / "1").write_text("999999999")  # a pid that does not exist
    assert state.pod_ready()[0] is False
    state.mark_ready(1)
    assert state.pod_ready() == (True, "2/2 workers ready")
    assert (state.ready_dir / "1").read_text() == str(os.getpid())
    state.start_draining()
    assert state.pod_ready() == (False, "shutting down")


def test_batch_size_buckets_include_the_maximum_even_when_it_is_one() -> None:
    assert batch_size_buckets(100) == [1, 2, 4, 8, 16, 32, 64, 100]
    assert batch_size_buckets(1) == [1]
    assert batch_size_buckets(8) == [1, 2, 4, 8]


def test_rows_split_and_merge_keep_every_argument_aligned() -> None:
    call = Call((np.arange(10).reshape(5, 2), [1, 2, 3, 4, 5]), {"w": np.arange(5)})
    assert rows.count_rows(call, 0) == 5
    head, tail = rows.split_call(call, 2, 0)
    assert rows.count_rows(head, 0) == 2
    assert tail.args[1] == [3, 4, 5]
    merged = rows.merge_calls([head, tail], 0)
    np.testing.assert_array_equal(merged.args[0], call.args[0])
    assert merged.args[1] == call.args[1]
    np.testing.assert_array_equal(merged.kwargs["w"], call.kwargs["w"])
    assert rows.merge_key(head, 0) == rows.merge_key(tail, 0)
    assert rows.merge_key(Call((np.ones((2, 3)),)), 0) != rows.merge_key(
        Call((np.ones((2, 4)),)), 0
    )
    with pytest.raises(rows.BatchError, match="lists batch only along dimension 0"):
        rows.count_rows(Call(([1, 2],)), 1)


def test_readyz_body_names_loading_and_failed_workers_and_the_operator_reads_it(
    tmp_path: Path,
) -> None:
    state = StateDir.create("r", 3)
    try:
        state.mark_loading(0)
        state.mark_ready(0)
        state.mark_loading(1)
        state.mark_loading(2)
        state.record_load_error(2, "RuntimeError: no model at /models/x\nTraceback...")
        body = state.readiness()
        assert body["ready"] is False
        assert (body["workers"], body["readyWorkers"]) == (3, 1)
        assert [w["worker"] for w in body["loading"]] == [1]
        assert 0 <= body["loading"][0]["seconds"] < 60
        assert body["failed"] == [{"worker": 2, "error": "RuntimeError: no model at /models/x"}]
        assert isinstance(body["startedAt"], float)
        # The operator's parser reads exactly this body (the contract between the two).
        answer = parse_readyz(json.dumps(body))
        assert answer is not None
        assert answer.describe().startswith("workers 1/3 ready, worker 1 loading for ")
        assert answer.describe().endswith("worker 2 failed: RuntimeError: no model at /models/x")
        state.start_draining()
        assert state.readiness()["draining"] is True
        assert state.readiness()["ready"] is False
    finally:
        state.remove()

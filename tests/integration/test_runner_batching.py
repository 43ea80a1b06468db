"""Adaptive batching through HTTP: merging, splitting, max_batch_size 1, overload."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import numpy as np
import pytest

from fixtures.runnables.serving import ServerProcess, env_map, run_server, runner_args
from kuberunner import wire


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def start(tmp: Path, overrides: dict[str, object]) -> AbstractContextManager[ServerProcess]:
    return run_server(
        runner_args("example_runnables:Doubler", "doubler"),
        tmp,
        {
            "KUBERUNNER_WORKER_ENV_MAP": env_map({}),
            "KUBERUNNER_CONFIG_OVERRIDES": json.dumps(overrides),
        },
    )


@pytest.fixture(scope="module")
def doubler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    overrides = {
        "runners": {"doubler": {"batching": {"methods": {"__call__": {"max_batch_size": 4}}}}}
    }
    with start(tmp_path_factory.mktemp("doubler"), overrides) as server:
        server.wait_for("/readyz")
        yield server


@pytest.fixture(scope="module")
def one_row(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    overrides = {
        "runners": {
            "batching": {"max_batch_size": 1},
            "doubler": {"batching": {"methods": {"count": {"max_latency_ms": 30}}}},
        }
    }
    with start(tmp_path_factory.mktemp("one"), overrides) as server:
        server.wait_for("/readyz")
        yield server


async def concurrent(url: str, path: str, bodies: list[object]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as c:
        return await asyncio.gather(*(c.post(path, json=b) for b in bodies))


def test_concurrent_requests_are_merged_into_batches(doubler: ServerProcess) -> None:
    bodies: list[object] = [{"args": [[i]]} for i in range(30)]
    responses = asyncio.run(concurrent(doubler.url, "/count", bodies))
    assert all(r.status_code == 200 for r in responses)
    seen = [r.json()[0] for r in responses]
    assert max(seen) > 1, f"no request shared a batch: {seen}"
    text = httpx.get(doubler.url + "/metrics").text
    assert metric(text, "kuberunner_runner_batch_size_sum", method="count") == 30
    batches = metric(text, "kuberunner_runner_batch_size_count", method="count")
    assert batches < 30
    singles = metric(text, "kuberunner_runner_batch_size_bucket", method="count", le="1.0")
    assert singles < batches, "the histogram must show batches of more than one row"
    assert metric(text, "kuberunner_runner_queue_duration_seconds_count", method="count") == 30


def test_large_positional_request_is_split_by_rows_and_reassembled(
    doubler: ServerProcess,
) -> None:
    before = httpx.get(doubler.url + "/metrics").text
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    content_type, body = wire.encode_call((x,), {})
    r = httpx.post(doubler.url + "/", content=body, headers={"content-type": content_type})
    assert r.status_code == 200
    np.testing.assert_array_equal(np.load(io.BytesIO(r.content)), x * 2)
    after = httpx.get(doubler.url + "/metrics").text
    count = "kuberunner_runner_batch_size_count"
    added = metric(after, count, method="__call__") - metric(before, count, method="__call__")
    assert added == 3  # 4 + 4 + 2 rows with max_batch_size 4
    total = "kuberunner_runner_batch_size_sum"
    assert metric(after, total, method="__call__") - metric(before, total, method="__call__") == 10


def test_json_lists_batch_too_and_unbatchable_arguments_are_400(doubler: ServerProcess) -> None:
    r = httpx.post(doubler.url + "/", json={"args": [[1, 2, 3]]})
    assert r.json() == [2, 4, 6]
    r = httpx.post(doubler.url + "/", json={"args": [5]})
    assert r.status_code == 400
    assert "must be a list or a numpy array" in r.json()["error"]
    x = np.ones((3, 2))
    content_type, body = wire.encode_call((x, np.ones((2, 2))), {})
    r = httpx.post(doubler.url + "/pair", content=body, headers={"content-type": content_type})
    assert r.status_code == 400
    assert "same batch size" in r.json()["error"]


def test_multi_output_batched_method_returns_a_tuple(doubler: ServerProcess) -> None:
    x, y = np.full((3, 2), 5.0), np.ones((3, 2))
    content_type, body = wire.encode_call((x, y), {})
    r = httpx.post(doubler.url + "/pair", content=body, headers={"content-type": content_type})
    assert r.status_code == 200
    total, diffs = wire.decode_result(r.headers["content-type"], r.content)
    np.testing.assert_array_equal(total, x + y)
    assert diffs == [4, 4, 4]


def test_max_batch_size_one_serves_row_by_row(one_row: ServerProcess) -> None:
    responses = asyncio.run(concurrent(one_row.url, "/", [{"args": [[i, i]]} for i in range(5)]))
    assert [r.json() for r in responses] == [[2 * i, 2 * i] for i in range(5)]
    text = httpx.get(one_row.url + "/metrics").text
    assert metric(text, "kuberunner_runner_batch_size_count", method="__call__") == 10
    assert metric(text, "kuberunner_runner_batch_size_bucket", method="__call__", le="1.0") == 10


def test_queue_past_max_latency_gets_503_with_retry_after(one_row: ServerProcess) -> None:
    # 20 ms per row, one row per batch, 30 ms allowed: most of 20 concurrent calls cannot wait.
    responses = asyncio.run(concurrent(one_row.url, "/count", [{"args": [[i]]} for i in range(20)]))
    codes = [r.status_code for r in responses]
    assert set(codes) == {200, 503}, codes
    refused = [r for r in responses if r.status_code == 503]
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert all("max_latency_ms=30" in r.json()["error"] for r in refused)
    assert httpx.post(one_row.url + "/count", json={"args": [[1]]}).json() == [1]

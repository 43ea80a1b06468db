"""The runner server's HTTP interface, as a client and kubelet see it: formats and status codes."""

from __future__ import annotations

import asyncio
import io
import json
import pickle
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from fixtures.runnables.serving import ServerProcess, env_map, run_server, runner_args
from kuberunner import wire

NPY = {"content-type": wire.NPY}


@pytest.fixture(scope="module")
def adder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("adder")
    args = runner_args(
        "example_runnables:Adder", "adder", "--timeout", "1", "--max-body-bytes", "4096"
    )
    with run_server(args, tmp, {"KUBERUNNER_WORKER_ENV_MAP": env_map({})}) as server:
        server.wait_for("/readyz")
        yield server


@pytest.fixture
def client(adder: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=adder.url, timeout=10) as c:
        yield c


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def test_json_call_and_default_route(client: httpx.Client) -> None:
    r = client.post("/add", json={"args": [2, 3]})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == 5
    r = client.post("/add", json={"args": ["a"], "kwargs": {"b": "b"}})
    assert r.json() == "ab"
    assert client.post("/", json={"args": [{"k": [1, 2]}]}).json() == {"k": [1, 2]}


def test_npy_in_npy_out_never_pickles(client: httpx.Client) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    r = client.post("/", content=npy(x), headers=NPY)
    assert r.status_code == 200
    assert r.headers["content-type"] == wire.NPY
    np.testing.assert_array_equal(np.load(io.BytesIO(r.content), allow_pickle=False), x)
    # An object array needs pickle inside the .npy: refused, not loaded.
    bad = io.BytesIO()
    np.save(bad, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    r = client.post("/", content=bad.getvalue(), headers=NPY)
    assert r.status_code == 400
    assert "invalid .npy body" in r.json()["error"]


def test_bundle_carries_several_arrays_and_multi_output(client: httpx.Client) -> None:
    a, b, scale = np.ones(3), np.arange(3.0), np.full(3, 2.0)
    content_type, body = wire.encode_call(([a, b], scale), {})
    assert content_type == wire.BUNDLE
    r = client.post("/mean", content=body, headers={"content-type": content_type})
    assert r.status_code == 200
    assert r.headers["content-type"] == wire.BUNDLE
    total, mean = wire.load_bundle(r.content)
    np.testing.assert_array_equal(total, (a + b) * scale)
    assert mean == pytest.approx(float(((a + b) * scale).mean()))
    # Accept: application/json turns arrays into nested lists for curl users.
    r = client.post(
        "/mean", content=body, headers={"content-type": content_type, "accept": "application/json"}
    )
    assert r.json() == [[2.0, 4.0, 6.0], 4.0]


@pytest.mark.parametrize(
    ("body", "content_type", "fragment"),
    [
        (b"{not json", "application/json", "not valid JSON"),
        (b"[1, 2]", "application/json", "must be an object"),
        (b'{"args": 3}', "application/json", "'args' must be a list"),
        (b'{"args": [], "extra": 1}', "application/json", "unknown body field(s) ['extra']"),
        (b"\x93NUMPY garbage", wire.NPY, "invalid .npy body"),
        (b"KRB1\x00\x00\x00\x05{}", wire.BUNDLE, "header runs past the end"),
    ],
)
def test_malformed_bodies_get_400_naming_the_problem(
    client: httpx.Client, body: bytes, content_type: str, fragment: str
) -> None:
    r = client.post("/add", content=body, headers={"content-type": content_type})
    assert r.status_code == 400
    assert fragment in r.json()["error"]


def test_wrong_arguments_and_invalid_argument_are_400(client: httpx.Client) -> None:
    r = client.post("/invalid", json={})
    assert r.status_code == 400
    assert r.json() == {"error": "InvalidArgument: that argument will not do"}


def test_unknown_path_404_wrong_verb_405(client: httpx.Client) -> None:
    r = client.post("/nope", json={})
    assert r.status_code == 404
    assert "/nope" in r.json()["error"]
    r = client.get("/add")
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    assert client.post("/readyz").status_code == 405


def test_runnable_exception_is_500_without_traceback(client: httpx.Client) -> None:
    r = client.post("/fail", json={"args": ["no model today"]})
    assert r.status_code == 500
    assert r.json() == {"error": "ValueError: no model today"}
    assert "Traceback" not in r.text
    r = client.post("/add", json={"args": [1]})  # missing argument: a TypeError in the call
    assert r.status_code == 500
    assert r.json()["error"].startswith("TypeError: ")
    assert client.post("/add", json={"args": [1, 1]}).json() == 2  # still serving


def test_unserialisable_result_is_500(client: httpx.Client) -> None:
    r = client.post("/unserialisable", json={})
    assert r.status_code == 500
    assert "cannot serialise the result" in r.json()["error"]
    assert "set" in r.json()["error"]


def test_timeout_is_504_and_server_keeps_serving(client: httpx.Client) -> None:
    r = client.post("/ahang", json={"args": [5]})
    assert r.status_code == 504
    assert "1 seconds" in r.json()["error"]
    assert client.post("/add", json={"args": [1, 2]}).json() == 3
    assert client.get("/livez").status_code == 200


def test_body_too_large_is_413(client: httpx.Client) -> None:
    r = client.post("/add", json={"args": ["x" * 5000, ""]})
    assert r.status_code == 413
    assert "4096" in r.json()["error"]
    assert client.post("/add", json={"args": [1, 2]}).json() == 3


def test_unsupported_content_type_is_415(client: httpx.Client) -> None:
    r = client.post("/add", content=b"a=1", headers={"content-type": "text/csv"})
    assert r.status_code == 415
    assert "text/csv" in r.json()["error"]


class _Marker:
    """Unpickling this would create a file: proof that the server loaded the body."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def test_pickle_is_refused_with_415_and_never_loaded(client: httpx.Client, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    body = pickle.dumps(_Marker(str(marker)))
    r = client.post("/add", content=body, headers={"content-type": wire.PICKLE})
    assert r.status_code == 415
    assert "--allow-pickle" in r.json()["error"]
    assert not marker.exists()


def test_sync_and_async_generators_stream_one_chunk_per_item(adder: ServerProcess) -> None:
    with httpx.Client(base_url=adder.url, timeout=10) as c:
        with c.stream("POST", "/tokens", json={"args": [3]}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"] == wire.NDJSON
            assert "chunked" in r.headers.get("transfer-encoding", "")
            lines = [json.loads(line) for line in r.iter_lines() if line]
        assert lines == ["tok0 ", "tok1 ", "tok2 "]
        with c.stream("POST", "/atokens", json={"args": [4]}) as r:
            items = [json.loads(line) for line in r.iter_lines() if line]
        assert items == [{"i": i} for i in range(4)]


def test_stream_failing_midway_breaks_the_connection(client: httpx.Client) -> None:
    with client.stream("POST", "/broken_stream") as r:
        assert r.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            r.read()
    assert client.post("/add", json={"args": [1, 2]}).json() == 3


def test_probes_and_metrics_are_not_counted_as_requests(client: httpx.Client) -> None:
    for _ in range(3):
        client.get("/livez")
        client.get("/readyz")
    client.post("/add", json={"args": [4, 4]})
    text = client.get("/metrics").text
    counted = [
        line for line in text.splitlines() if line.startswith("kuberunner_runner_requests_total{")
    ]
    assert counted
    assert not any("readyz" in line or "livez" in line or "metrics" in line for line in counted)
    assert any('method="add"' in line and 'code="200"' in line for line in counted)


def test_allow_pickle_and_max_concurrency(tmp_path: Path) -> None:
    overrides = json.dumps({"runners": {"adder": {"traffic": {"max_concurrency": 1}}}})
    env = {"KUBERUNNER_WORKER_ENV_MAP": env_map({}), "KUBERUNNER_CONFIG_OVERRIDES": overrides}
    args = runner_args("example_runnables:Adder", "adder", "--allow-pickle")
    with run_server(args, tmp_path, env) as server:
        server.wait_for("/readyz")
        # complex numbers have no JSON form: only pickle carries them, and only when allowed.
        content_type, body = wire.encode_call((1 + 2j, 3 + 0j), {}, pickled=True)
        r = httpx.post(server.url + "/add", content=body, headers={"content-type": content_type})
        assert r.status_code == 200
        assert r.headers["content-type"] == wire.PICKLE
        assert wire.decode_result(wire.PICKLE, r.content, allow_pickle=True) == 4 + 2j

        async def two_at_once() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
                slow = asyncio.create_task(c.post("/ahang", json={"args": [1]}))
                await asyncio.sleep(0.3)
                refused = await c.post("/add", json={"args": [1, 2]})
                return [await slow, refused]

        slow, refused = asyncio.run(two_at_once())
        assert slow.status_code == 200
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert "max_concurrency=1" in refused.json()["error"]


def test_stream_stops_when_the_client_leaves(client: httpx.Client) -> None:
    with client.stream("POST", "/forever") as r:
        lines = r.iter_lines()
        assert [next(lines), next(lines)] == ["1", "2"]
    # The connection is closed now; the generator must stop instead of running on.
    deadline = time.monotonic() + 5
    while True:
        first = client.post("/produced_so_far", json={}).json()
        time.sleep(0.3)
        if client.post("/produced_so_far", json={}).json() == first:
            break
        assert time.monotonic() < deadline, "the stream kept producing after the client left"

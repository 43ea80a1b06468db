"""``Runner.init_client()`` against a real runner server: formats, streams, errors, readiness."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from fixtures.runnables.example_runnables import Adder, SlowLoader
from fixtures.runnables.serving import ServerProcess, env_map, free_port, run_server, runner_args
from kuberunner import InvalidArgument, NotFound, RemoteException, Runner
from kuberunner.handles.remote import RemoteRunnerHandle


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = runner_args("example_runnables:Adder", "adder", "--timeout", "2")
    env = {"KUBERUNNER_WORKER_ENV_MAP": env_map({})}
    with run_server(args, tmp_path_factory.mktemp("client"), env) as s:
        s.wait_for("/readyz")
        yield s


@pytest.fixture
def runner(server: ServerProcess) -> Iterator[Runner]:
    r = Runner(Adder, name="adder")
    r.init_client(address=server.url)
    yield r
    r.destroy()


def test_sync_json_and_numpy_round_trips(runner: Runner) -> None:
    assert runner.add.run(2, 3) == 5
    assert runner.add.run(a=[1], b=[2]) == [1, 2]
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = runner.run(x)  # the default method (__call__) is the identity; npy both ways
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, x)
    total, mean = runner.mean.run([np.ones(2), np.ones(2)], np.full(2, 3.0))
    np.testing.assert_array_equal(total, np.full(2, 6.0))
    assert mean == 6.0


async def test_async_calls_and_streams(runner: Runner) -> None:
    assert await runner.add.async_run("a", "b") == "ab"
    assert [c async for c in runner.tokens.async_stream(3)] == ["tok0 ", "tok1 ", "tok2 "]
    assert [c async for c in runner.atokens.async_stream(2)] == [{"i": 0}, {"i": 1}]


async def test_errors_become_library_exceptions(runner: Runner) -> None:
    with pytest.raises(RemoteException, match="answered 500: ValueError: bad day"):
        runner.fail.run("bad day")
    with pytest.raises(InvalidArgument, match="that argument will not do"):
        await runner.invalid.async_run()
    with pytest.raises(RemoteException, match="answered 504"):
        await runner.ahang.async_run(10)
    # A stream that fails before its first item: the status is checked (BentoML bug 14).
    with pytest.raises(RemoteException, match="TypeError"):
        [c async for c in runner.tokens.async_stream("three")]
    with pytest.raises(RemoteException, match="broke off"):
        [c async for c in runner.broken_stream.async_stream()]
    assert await runner.add.async_run(1, 1) == 2


def test_unknown_method_on_server_is_not_found(server: ServerProcess) -> None:
    class Other(Adder):
        @Adder.method
        def missing(self) -> None:
            return None

    r = Runner(Other, name="adder")
    r.init_client(address=server.url)
    try:
        with pytest.raises(NotFound, match="/missing"):
            r.missing.run()
    finally:
        r.destroy()


async def test_is_ready_true_when_served_false_when_nothing_listens(runner: Runner) -> None:
    assert await runner.runner_handle_is_ready() is True
    dead = Runner(Adder, name="adder")
    dead.init_client(address=f"http://127.0.0.1:{free_port()}")
    handle = dead._runner_handle
    assert isinstance(handle, RemoteRunnerHandle)
    assert await handle.is_ready(0.5) is False  # refused: False, never an exception
    with pytest.raises(RemoteException, match="failed to reach runner 'adder'"):
        await dead.add.async_run(1, 2)
    await dead.adestroy()


def test_calls_made_while_the_runner_loads_are_retried_until_it_answers(tmp_path: Path) -> None:
    """A runner still loading answers 503 with the retry-elsewhere header: the handle tries
    again (pauses of 0, 0.2, 0.5 and 1 s) and the call returns once the 1.5 s load is over;
    without the retries the first 503 would raise ServiceUnavailable."""
    slow = run_server(
        runner_args("example_runnables:SlowLoader", "adder"),
        tmp_path,
        {"KUBERUNNER_WORKER_ENV_MAP": env_map({"LOAD_SECONDS": "1.5"})},
    )
    with slow as server:
        server.wait_for("/livez")
        assert httpx.get(server.url + "/readyz").status_code == 503  # still loading
        r = Runner(SlowLoader, name="adder")
        r.init_client(address=server.url)
        try:
            assert r.ping.run() == "pong"
        finally:
            r.destroy()


def test_address_from_runner_map(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERUNNER_RUNNER_MAP", json.dumps({"adder": server.url}))
    r = Runner(Adder, name="adder")
    r.init_client()
    try:
        assert r.add.run(20, 22) == 42
    finally:
        r.destroy()
    monkeypatch.setenv("KUBERUNNER_RUNNER_MAP", json.dumps({"other": server.url}))
    with pytest.raises(ValueError, match="no URL for runner 'adder'"):
        Runner(Adder, name="adder").init_client()


class ConnectionBalancer:
    """A TCP proxy on 127.0.0.1 that, like a Service, picks a backend per connection (round
    robin over `backends`, which the test may grow) and counts connections per backend name."""

    def __init__(self, backends: dict[str, int]) -> None:
        self.backends = dict(backends)
        self.connections: Counter[str] = Counter()
        self._turn = 0
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            names = list(self.backends)
            name = names[self._turn % len(names)]
            self._turn += 1
            self.connections[name] += 1
            backend = socket.create_connection(("127.0.0.1", self.backends[name]))
            self._sockets += [client, backend]
            for source, sink in ((client, backend), (backend, client)):
                pump = threading.Thread(target=self._pump, args=(source, sink), daemon=True)
                pump.start()
                self._threads.append(pump)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self._listener.close()
        for s in self._sockets:
            s.close()
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.mark.parametrize("max_age", [0.5, math.inf])
async def test_kept_connections_are_retired_so_a_replica_added_later_gets_calls(
    server: ServerProcess, max_age: float
) -> None:
    """A Service balances connections, not calls. The handle keeps connections alive, and
    retires them at `max_connection_age`, so a replica added behind the Service while calls
    flow gets its share within about that age, through both `run` and `async_run`. With
    connections kept for ever (math.inf), the added replica would get nothing."""
    balancer = ConnectionBalancer({"first": server.port})
    r = Runner(Adder, name="adder")
    r.init_client(address=balancer.url, max_connection_age=max_age)
    try:
        for i in range(20):
            assert r.add.run(i, 1) == i + 1
            assert await r.add.async_run(i, 2) == i + 2
        assert set(balancer.connections) == {"first"}

        balancer.backends["added"] = server.port  # a scale-up behind the "Service"
        calls = 0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and balancer.connections["added"] < 2:
            assert r.add.run(calls, 1) == calls + 1
            assert await r.add.async_run(calls, 2) == calls + 2
            calls += 1
            await asyncio.sleep(0.02)
    finally:
        await r.adestroy()
        balancer.close()
    print(f"\nmax_age={max_age}: connections {dict(balancer.connections)} for {calls} call pairs")
    if max_age == math.inf:
        assert balancer.connections == {"first": 2}
    else:
        assert balancer.connections["added"] >= 2
        # Still keep-alive: a few connections, not one per call.
        assert sum(balancer.connections.values()) <= 2 + 2 * (3.0 / max_age + 1)

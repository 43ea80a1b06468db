"""Runner: names, method table, batching precedence, handles and scheduling."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from kuberunner import Runnable, Runner, RunnerMethod, StateException
from kuberunner.exceptions import InvalidArgument
from kuberunner.handles import RunnerHandle

RUNNER_LOGGER = "kuberunner.runner"


class IrisClassifier(Runnable):
    SUPPORTED_RESOURCES = ("cpu",)
    SUPPORTS_CPU_MULTI_THREADING = False

    def __init__(self, bias: int = 0) -> None:
        self.bias = bias

    @Runnable.method(batchable=True)
    def predict(self, rows: list[list[float]]) -> list[int]:
        """Class of each row."""
        return [int(sum(row)) % 3 + self.bias for row in rows]

    @Runnable.method
    def generate(self, n: int) -> Iterator[str]:
        for i in range(n):
            yield f"tok{i} "


class AsyncModel(Runnable):
    SUPPORTED_RESOURCES = ("cpu",)
    SUPPORTS_CPU_MULTI_THREADING = True

    @Runnable.method
    async def __call__(self, x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    @Runnable.method
    async def stream(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    @Runnable.method(batchable=True)
    def pair(self, a: list[int], b: list[int]) -> list[int]:
        return [x + y for x, y in zip(a, b, strict=True)]


def one_method(name: str, **method_kwargs: Any) -> type[Runnable]:
    def method(self: object, x: Any = None) -> Any:
        return x

    cls: type[Runnable] = type("OneMethod", (Runnable,), {})
    cls.add_method(method, name, **method_kwargs)
    return cls


# Seed usage


def test_seed_usage_works_exactly() -> None:
    class SeedIris(Runnable):
        SUPPORTED_RESOURCES = ("cpu",)
        SUPPORTS_CPU_MULTI_THREADING = False

        @Runnable.method(batchable=True)
        def predict(self, rows: list[list[float]]) -> list[int]:
            return [int(sum(row)) % 3 for row in rows]

    runner = Runner(SeedIris, name="iris_clf")
    runner.init_local()
    assert runner.run([[1.0, 2.0], [0.5, 0.5]]) == [0, 1]
    assert runner.predict.run([[1.0, 1.0]]) == [2]
    runner.destroy()


async def test_seed_async_usage() -> None:
    runner = Runner(IrisClassifier, name="iris_clf", runnable_init_params={"bias": 10})
    runner.init_local(quiet=True)
    assert await runner.predict.async_run([[1.0, 1.0]]) == [12]
    chunks = [chunk async for chunk in runner.generate.async_stream(3)]
    assert chunks == ["tok0 ", "tok1 ", "tok2 "]
    runner.destroy()


# Names


@pytest.mark.parametrize(
    "name", ["test-name", "test_name", "test.name", "a", "a" * 50, "a" * 63, "9dummy", "dummy9"]
)
def test_valid_names(name: str) -> None:
    assert Runner(IrisClassifier, name=name).name == name


@pytest.mark.parametrize(
    "name", ["", "invalid name", "invalid弁当name", "invalid!name", "a" * 64, "a" * 100, "_x", "x_"]
)
def test_invalid_names_name_the_name_and_the_rule(name: str) -> None:
    with pytest.raises(ValueError, match="must be at most 63 characters") as info:
        Runner(IrisClassifier, name=name)
    assert f"'{name.lower()}'" in str(info.value)


def test_trailing_newline_is_not_a_valid_name() -> None:
    # BentoML's re.match with `$` accepts "abc\n".
    with pytest.raises(ValueError, match="is not valid"):
        Runner(IrisClassifier, name="abc\n")


def test_uppercase_name_is_lowercased_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=RUNNER_LOGGER):
        runner = Runner(IrisClassifier, name="UPPERCASE_name")
    assert runner.name == "uppercase_name"
    assert "Converting runner name 'UPPERCASE_name' to lowercase: 'uppercase_name'" in caplog.text


def test_default_name_is_lowercased_class_name(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=RUNNER_LOGGER):
        runner = Runner(IrisClassifier)
    assert runner.name == "irisclassifier"
    assert "Using lowercased runnable class name 'irisclassifier' for runner." in caplog.text


@pytest.mark.parametrize("name", ["batching", "Resources", "workers_per_resource", "traffic"])
def test_reserved_config_keys_are_rejected_as_names(name: str) -> None:
    with pytest.raises(ValueError, match=f"Runner name '{name.lower()}' is reserved"):
        Runner(IrisClassifier, name=name)


# Methods


def test_runner_methods_carry_what_a_server_needs() -> None:
    runner = Runner(IrisClassifier, name="iris")
    predict = runner.predict
    assert isinstance(predict, RunnerMethod)
    assert [m.name for m in runner.runner_methods] == ["predict", "generate"]
    assert (predict.name, predict.config.batchable, predict.config.batch_dim) == (
        "predict",
        True,
        (0, 0),
    )
    assert runner.generate.config.is_stream is True
    assert (predict.max_batch_size, predict.max_latency_ms) == (100, 60000)
    assert predict.doc == "Class of each row."
    assert not callable(predict)


def test_default_method_rule() -> None:
    assert Runner(one_method("only"), name="one").default_method is not None
    assert Runner(AsyncModel, name="am").default_method.name == "__call__"  # type: ignore[union-attr]
    runner = Runner(IrisClassifier, name="iris")
    assert runner.default_method is None
    runner.init_local(quiet=True)
    with pytest.raises(AttributeError, match="has no default method"):
        runner.run([[1.0]])
    runner.destroy()


def test_unknown_method_is_attribute_error() -> None:
    with pytest.raises(AttributeError, match="Runner 'iris' has no method 'nope'"):
        _ = Runner(IrisClassifier, name="iris").nope


@pytest.mark.parametrize(
    "method_name",
    ["run", "async_run", "name", "destroy", "init_local", "init_client", "models", "config"],
)
def test_bug_6_method_names_clashing_with_runner_attributes(method_name: str) -> None:
    with pytest.raises(ValueError, match=f"method named '{method_name}'.*clashes"):
        Runner(one_method(method_name), name="clash")


# Batching precedence: method_configs > kwargs > config per method > runner > global > defaults


def write_config(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    path = tmp_path / "kuberunner.yaml"
    path.write_text(text)
    monkeypatch.setenv("KUBERUNNER_CONFIG", str(path))


def test_batching_precedence(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(
        tmp_path,
        monkeypatch,
        """
runners:
  batching: {max_batch_size: 11, max_latency_ms: 111}
  iris:
    batching:
      max_batch_size: 22
      methods: {generate: {max_batch_size: 33, max_latency_ms: 333}}
""",
    )
    runner = Runner(IrisClassifier, name="iris")
    assert (runner.predict.max_batch_size, runner.predict.max_latency_ms) == (22, 111)
    assert (runner.generate.max_batch_size, runner.generate.max_latency_ms) == (33, 333)
    kw = Runner(IrisClassifier, name="iris", max_batch_size=44, max_latency_ms=444)
    assert (kw.generate.max_batch_size, kw.generate.max_latency_ms) == (44, 444)
    explicit = Runner(
        IrisClassifier,
        name="iris",
        max_batch_size=44,
        method_configs={"predict": {"max_batch_size": 55}},
    )
    assert (explicit.predict.max_batch_size, explicit.predict.max_latency_ms) == (55, 111)
    assert explicit.generate.max_batch_size == 44
    other = Runner(IrisClassifier, name="other")  # global section only
    assert (other.predict.max_batch_size, other.predict.max_latency_ms) == (11, 111)


def test_method_configs_naming_unknown_methods_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"unknown methods \['predikt'\]"):
        Runner(IrisClassifier, name="iris", method_configs={"predikt": {"max_batch_size": 1}})


def test_bug_3_config_found_by_lowercased_name(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path, monkeypatch, "runners:\n  myrunner:\n    workers_per_resource: 3\n")
    runner = Runner(IrisClassifier, name="MyRunner")
    assert runner.name == "myrunner"
    assert runner.workers_per_resource == 3  # BentoML looks up 'MyRunner' and misses


def test_bug_4_batching_disabled_affects_only_that_runner(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path, monkeypatch, "runners:\n  nobatch:\n    batching: {enabled: false}\n")
    off = Runner(IrisClassifier, name="nobatch")
    on = Runner(IrisClassifier, name="on")
    assert off.predict.config.batchable is False
    assert on.predict.config.batchable is True  # BentoML: False, the class config was mutated
    assert IrisClassifier.predict.config.batchable is True


def test_config_is_read_at_construction(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "KUBERUNNER_CONFIG_OVERRIDES",
        json.dumps({"runners": {"iris": {"resources": {"cpu": "3"}, "workers_per_resource": 2}}}),
    )
    runner = Runner(IrisClassifier, name="iris")
    assert runner.resource_config == {"cpu": "3"}
    assert runner.scheduled_worker_count == 6
    env_map = runner.scheduled_worker_env_map
    assert list(env_map) == list(range(6))
    assert env_map[5]["CUDA_VISIBLE_DEVICES"] == "-1"
    assert env_map[5]["BENTOML_NUM_THREAD"] == "1"
    monkeypatch.delenv("KUBERUNNER_CONFIG_OVERRIDES")
    assert Runner(IrisClassifier, name="iris").resource_config is None


def test_bug_7_float_wpr_on_cpu_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "KUBERUNNER_CONFIG_OVERRIDES",
        '{"runners": {"iris": {"resources": {"cpu": 4}, "workers_per_resource": 0.5}}}',
    )
    runner = Runner(IrisClassifier, name="iris")
    # BentoML: count 2.0, then TypeError building the env map.
    with pytest.raises(ValueError, match="int workers_per_resource"):
        _ = runner.scheduled_worker_env_map


def test_bug_10_resources_system_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERUNNER_CONFIG_OVERRIDES", '{"runners": {"resources": "system"}}')
    runner = Runner(AsyncModel, name="am")
    assert runner.resource_config == "system"
    assert runner.scheduled_worker_count == 1  # BentoML: "No known supported resource"


# Handles


def test_bug_18_uninitialized_runner_names_itself_and_the_fix() -> None:
    runner = Runner(IrisClassifier, name="iris")
    calls: list[Callable[[], Any]] = [
        lambda: runner.predict.run([[1.0]]),
        lambda: runner.generate.run(1),
    ]
    for call in calls:
        with pytest.raises(StateException, match=r"Runner 'iris' is not initialized.*init_local"):
            call()
    with pytest.raises(StateException, match=r"init_client\(\)"):
        asyncio.run(runner.predict.async_run([[1.0]]))


async def test_no_handle_is_not_ready_and_destroyed_runner_fails_again() -> None:
    runner = Runner(IrisClassifier, name="iris")
    assert await runner.runner_handle_is_ready() is False  # BentoML's dummy handle says True
    runner.init_local(quiet=True)
    assert await runner.runner_handle_is_ready(timeout=0.5) is True
    runner.destroy()
    assert await runner.runner_handle_is_ready() is False
    with pytest.raises(StateException, match="Runner 'iris' is not initialized"):
        await runner.predict.async_run([[1.0]])
    with pytest.raises(StateException):
        runner.generate.async_stream(1)


def test_init_local_warns_unless_quiet(caplog: pytest.LogCaptureFixture) -> None:
    warning = (
        "'Runner.init_local' is for debugging and testing only. Make sure to remove it "
        "before deploying to production."
    )
    runner = Runner(IrisClassifier, name="iris")
    with caplog.at_level(logging.WARNING, logger=RUNNER_LOGGER):
        runner.init_local()
    assert warning in caplog.text
    runner.destroy()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=RUNNER_LOGGER):
        runner.init_local(quiet=True)
    assert warning not in caplog.text
    with pytest.raises(StateException, match="Runner 'iris' is already initialized"):
        runner.init_local(quiet=True)
    runner.destroy()


def test_init_local_failure_is_logged_and_reraised(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Runnable):
        def __init__(self) -> None:
            raise RuntimeError("no weights")

        @Runnable.method
        def f(self) -> None: ...

    runner = Runner(Broken, name="broken")
    with caplog.at_level(logging.ERROR, logger=RUNNER_LOGGER), pytest.raises(RuntimeError):
        runner.init_local(quiet=True)
    assert "An exception occurred while instantiating runner 'broken'" in caplog.text
    with pytest.raises(StateException):
        runner.f.run()  # still uninitialised


async def test_bug_2_async_methods_are_awaited() -> None:
    runner = Runner(AsyncModel, name="am")
    runner.init_local(quiet=True)
    assert await runner.async_run(1) == 2  # BentoML returns an un-awaited coroutine
    assert [i async for i in runner.stream.async_stream(3)] == [0, 1, 2]
    with pytest.raises(StateException, match=r"use 'await runner\.__call__\.async_run"):
        runner.run(1)  # sync run inside a running loop cannot drive the coroutine
    runner.destroy()


def test_sync_run_drives_async_methods_outside_a_loop() -> None:
    runner = Runner(AsyncModel, name="am")
    runner.init_local(quiet=True)
    assert runner.run(41) == 42
    runner.destroy()


async def test_sync_methods_run_off_the_loop_one_at_a_time() -> None:
    active: list[int] = []
    peak: list[int] = []
    lock = threading.Lock()

    class Slow(Runnable):
        @Runnable.method
        def work(self, x: int) -> str:
            with lock:
                active.append(x)
                peak.append(len(active))
            time.sleep(0.1)
            with lock:
                active.remove(x)
            return threading.current_thread().name

    runner = Runner(Slow, name="slow")
    runner.init_local(quiet=True)
    calls = asyncio.gather(*(runner.async_run(i) for i in range(3)))
    ticks = 0
    while not calls.done():
        await asyncio.sleep(0.005)
        ticks += 1
    results = await calls
    assert max(peak) == 1  # the runnable never sees concurrent calls
    # ~0.3 s of work: a handle that ran it on the loop would finish within one or two ticks.
    assert ticks >= 5
    assert all(str(name).startswith("kuberunner-slow") for name in results)
    runner.destroy()


async def test_batchable_arguments_must_share_a_batch_size() -> None:
    runner = Runner(AsyncModel, name="am")
    runner.init_local(quiet=True)
    assert runner.pair.run([1, 2], [3, 4]) == [4, 6]
    with pytest.raises(InvalidArgument, match="same batch size"):
        runner.pair.run([1, 2], [3])
    with pytest.raises(InvalidArgument, match="same batch size"):
        await runner.pair.async_run([1, 2], b=[3])  # BentoML skips the check here
    runner.destroy()


async def test_async_stream_of_a_plain_method_yields_its_result() -> None:
    runner = Runner(IrisClassifier, name="iris")
    runner.init_local(quiet=True)
    assert [c async for c in runner.predict.async_stream([[1.0]])] == [[1]]
    runner.destroy()


class RecordingHandle(RunnerHandle):
    """A stand-in remote handle: records calls and answers from a table."""

    def __init__(self, runner: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(runner)
        self.args, self.kwargs = args, kwargs
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.closed = False
        self.ready: bool | Exception = True

    async def is_ready(self, timeout: float) -> bool:
        if isinstance(self.ready, Exception):
            raise self.ready
        return self.ready

    def run_method(self, method: RunnerMethod, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((method.name, args))
        return f"sync:{method.name}"

    async def async_run_method(self, method: RunnerMethod, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((method.name, args))
        return f"async:{method.name}"

    async def async_stream_method(
        self, method: RunnerMethod, *args: Any, **kwargs: Any
    ) -> AsyncIterator[Any]:
        for chunk in ("a", "b"):
            yield chunk

    def close(self) -> None:
        self.closed = True


async def test_init_client_with_a_handle_class() -> None:
    runner = Runner(IrisClassifier, name="iris")
    runner.init_client(RecordingHandle, "http://127.0.0.1:1", timeout=3)
    handle = runner._runner_handle
    assert isinstance(handle, RecordingHandle)
    assert (handle.args, handle.kwargs) == (("http://127.0.0.1:1",), {"timeout": 3})
    assert runner.predict.run([[1.0]]) == "sync:predict"
    assert await runner.predict.async_run([[2.0]]) == "async:predict"
    assert [c async for c in runner.generate.async_stream(2)] == ["a", "b"]
    assert handle.calls == [("predict", ([[1.0]],)), ("predict", ([[2.0]],))]
    # Bug 13: a probe that raises (e.g. connection refused) means "not ready", never an error.
    handle.ready = ConnectionRefusedError("refused")
    assert await runner.runner_handle_is_ready() is False
    runner.destroy()
    assert handle.closed is True
    assert await runner.runner_handle_is_ready() is False


async def test_adestroy_awaits_the_handle() -> None:
    runner = Runner(IrisClassifier, name="iris")
    runner.init_client(RecordingHandle)
    handle = runner._runner_handle
    await runner.adestroy()
    assert isinstance(handle, RecordingHandle)
    assert handle.closed is True


async def test_init_client_defaults_to_the_remote_handle(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("KUBERUNNER_RUNNER_MAP", json.dumps({"iris": f"http://127.0.0.1:{port}"}))
    runner = Runner(IrisClassifier, name="iris")
    runner.init_client()
    assert type(runner._runner_handle).__name__ == "RemoteRunnerHandle"
    assert await runner.runner_handle_is_ready(timeout=0.5) is False  # refused: not ready
    await runner.adestroy()

"""handles.caller.Caller: the one way a runnable is called, by the local handle and the server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from kuberunner.exceptions import StateException
from kuberunner.handles import caller as caller_module
from kuberunner.handles.caller import Caller


class Model:
    def where(self) -> str:
        return threading.current_thread().name

    def slow(self, seconds: float) -> str:
        time.sleep(seconds)
        return threading.current_thread().name

    def items(self, n: int) -> Iterator[str]:
        for _ in range(n):
            yield threading.current_thread().name

    async def coro(self) -> int:
        return 7


async def test_sync_calls_run_on_the_dedicated_thread_unless_inline_is_safe() -> None:
    caller = Caller(Model(), "m")
    try:
        assert (await caller.call("where", (), {})).startswith("kuberunner-m")
        assert await caller.call("where", (), {}, inline=True) == threading.current_thread().name
        assert await caller.call("coro", (), {}) == 7
    finally:
        caller.close()


async def test_busy_counts_an_abandoned_call_until_its_thread_finishes() -> None:
    caller = Caller(Model(), "m")
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(caller.call("slow", (0.3,), {}), 0.05)
        assert caller.busy == 1  # the caller gave up; the thread did not
        # The thread is taken: an inline request must not overtake the running call.
        assert (await caller.call("where", (), {}, inline=True)).startswith("kuberunner-m")
        assert caller.busy == 0
    finally:
        caller.close()


async def test_a_method_that_overruns_inline_is_never_inlined_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(caller_module, "INLINE_TRIP_SECONDS", 0.01)
    caller = Caller(Model(), "m")
    loop_thread = threading.current_thread().name
    try:
        assert await caller.call("slow", (0.02,), {}, inline=True) == loop_thread
        assert (await caller.call("slow", (0.0,), {}, inline=True)).startswith("kuberunner-m")
    finally:
        caller.close()


async def test_generator_items_come_from_the_thread_one_hop_each() -> None:
    caller = Caller(Model(), "m")
    try:
        items = [item async for item in caller.stream("items", (3,), {})]
        assert len(items) == 3
        assert all(name.startswith("kuberunner-m") for name in items)
        assert [item async for item in caller.stream("coro", (), {})] == [7]
    finally:
        caller.close()


async def test_run_refuses_an_async_method_on_a_thread_with_a_loop() -> None:
    caller = Caller(Model(), "m")
    try:
        with pytest.raises(StateException, match=r"'m\.coro' is async"):
            caller.run("coro", (), {})
        assert caller.run("where", (), {}) == threading.current_thread().name
    finally:
        caller.close()


def test_run_drives_an_async_method_outside_a_loop() -> None:
    caller = Caller(Model(), "m")
    try:
        assert caller.run("coro", (), {}) == 7
    finally:
        caller.close()

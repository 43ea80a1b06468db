"""BatchDispatcher with an in-process fake runnable: merging, splitting, failures, bounds."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from kuberunner.server.batching import BatchDispatcher, Overloaded, fit_linear
from kuberunner.server.rows import BatchError
from kuberunner.wire import Call


class FakeRunnable:
    """Doubles every row; records each batch; can be held; a ``None`` row makes it raise."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.batches: list[int] = []
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def __call__(self, call: Call) -> Any:
        self.started.set()
        first = call.args[0] if call.args else next(iter(call.kwargs.values()))
        self.batches.append(len(first))
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if any(v is None for v in first):
            raise RuntimeError("boom")
        if isinstance(first, np.ndarray):
            return first * 2
        return [x * 2 for x in first]


async def hold_then_submit(
    dispatcher: BatchDispatcher, fake: FakeRunnable, calls: list[Call]
) -> list[Any]:
    """Occupy the runnable with a first call, queue ``calls`` behind it, then release."""
    fake.gate = asyncio.Event()
    first = asyncio.create_task(dispatcher.submit(Call(([0],))))
    await fake.started.wait()
    tasks = [asyncio.create_task(dispatcher.submit(c)) for c in calls]
    await asyncio.sleep(0)
    fake.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert await first == [0]
    return results


async def test_concurrent_requests_merge_into_one_batch() -> None:
    fake = FakeRunnable()
    d = BatchDispatcher(fake, max_batch_size=100, max_latency_s=5)
    results = await hold_then_submit(d, fake, [Call(([i],)) for i in range(1, 10)])
    assert results == [[i * 2] for i in range(1, 10)]
    assert fake.batches == [1, 9]
    await d.close()


async def test_lone_request_is_dispatched_without_corking() -> None:
    fake = FakeRunnable()
    d = BatchDispatcher(fake, max_batch_size=100, max_latency_s=60)
    task = asyncio.create_task(d.submit(Call(([3],))))
    for _ in range(3):  # a few loop turns, no timers involved
        await asyncio.sleep(0)
    assert fake.started.is_set()
    assert await task == [6]
    await d.close()


async def test_max_batch_size_counts_rows_and_splits_positional_requests() -> None:
    fake = FakeRunnable()
    d = BatchDispatcher(fake, max_batch_size=4, max_latency_s=5)
    calls = [Call(([10 * k + i for i in range(3)],)) for k in range(3)]
    results = await hold_then_submit(d, fake, calls)
    assert results == [[2 * (10 * k + i) for i in range(3)] for k in range(3)]
    assert fake.batches[1:] == [4, 4, 1]
    assert max(fake.batches) <= 4
    await d.close()


async def test_one_large_numpy_request_is_split_and_reassembled() -> None:
    fake = FakeRunnable()
    d = BatchDispatcher(fake, max_batch_size=4, max_latency_s=5)
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    out = await d.submit(Call((x,)))
    np.testing.assert_array_equal(out, x * 2)
    assert fake.batches == [4, 4, 2]
    await d.close()


async def test_split_keyword_request_along_batch_dim_1() -> None:
    async def double(call: Call) -> Any:
        return call.kwargs["x"] * 2

    d = BatchDispatcher(double, max_batch_size=3, max_latency_s=5, batch_dim=(1, 1))
    x = np.arange(14).reshape(2, 7)
    np.testing.assert_array_equal(await d.submit(Call((), {"x": x})), x * 2)
    await d.close()


async def test_max_batch_size_one_runs_row_by_row() -> None:
    fake = FakeRunnable()
    d = BatchDispatcher(fake, max_batch_size=1, max_latency_s=5)
    results = await asyncio.gather(d.submit(Call(([1, 2, 3],))), d.submit(Call(([4],))))
    assert results == [[2, 4, 6], [8]]
    assert fake.batches == [1, 1, 1, 1]
    await d.close()


async def test_runnable_error_fails_only_its_batch_and_dispatcher_keeps_going() -> None:
    fake = FakeRunnable()
    d = BatchDispatcher(fake, max_batch_size=2, max_latency_s=5)
    # Batches: [1] (held), then [None, 3] (raises), then [4].
    results = await hold_then_submit(d, fake, [Call(([None],)), Call(([3],)), Call(([4],))])
    assert [type(r) for r in results[:2]] == [RuntimeError, RuntimeError]
    assert str(results[0]) == "boom"
    assert results[2] == [8]
    assert fake.batches == [1, 2, 1]
    assert await d.submit(Call(([5],))) == [10]
    await d.close()


async def test_unbatchable_arguments_fail_alone_before_queueing() -> None:
    fake = FakeRunnable()
    d = BatchDispatcher(fake, max_batch_size=4, max_latency_s=5)
    with pytest.raises(BatchError, match="same batch size"):
        await d.submit(Call(([1, 2], [3])))
    with pytest.raises(BatchError, match="list or a numpy array"):
        await d.submit(Call((5,)))
    assert await d.submit(Call(([1],))) == [2]
    assert d.queued_rows == 0
    await d.close()


async def test_wrong_result_length_fails_that_batch_only() -> None:
    calls = 0

    async def short(call: Call) -> Any:
        nonlocal calls
        calls += 1
        return [0] if calls == 1 else list(call.args[0])

    d = BatchDispatcher(short, max_batch_size=4, max_latency_s=5)
    with pytest.raises(BatchError, match="returned 1 rows for a batch of 2"):
        await d.submit(Call(([1, 2],)))
    assert await d.submit(Call(([7, 8],))) == [7, 8]
    await d.close()


async def test_cancelled_caller_does_not_hurt_the_others() -> None:
    fake = FakeRunnable()
    d = BatchDispatcher(fake, max_batch_size=100, max_latency_s=5)
    fake.gate = asyncio.Event()
    first = asyncio.create_task(d.submit(Call(([1],))))
    await fake.started.wait()
    quitter = asyncio.create_task(d.submit(Call(([2, 2],))))
    stayer = asyncio.create_task(d.submit(Call(([3],))))
    await asyncio.sleep(0)
    quitter.cancel()
    await asyncio.sleep(0)
    assert d.queued_rows == 1
    fake.gate.set()
    assert await first == [2]
    assert await stayer == [6]
    assert fake.batches == [1, 1]
    await d.close()


async def test_bounded_queue_refuses_with_retry_after() -> None:
    fake = FakeRunnable()
    d = BatchDispatcher(fake, max_batch_size=2, max_latency_s=5, max_queue_rows=3)
    fake.gate = asyncio.Event()
    first = asyncio.create_task(d.submit(Call(([1],))))
    await fake.started.wait()
    queued = asyncio.create_task(d.submit(Call(([1, 2, 3],))))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded) as info:
        await d.submit(Call(([9],)))
    assert info.value.retry_after >= 1
    fake.gate.set()
    assert await first == [2]
    assert await queued == [2, 4, 6]
    await d.close()


async def test_request_never_waits_past_max_latency() -> None:
    fake = FakeRunnable()
    d = BatchDispatcher(fake, max_batch_size=4, max_latency_s=0.05)
    fake.gate = asyncio.Event()
    first = asyncio.create_task(d.submit(Call(([1],))))
    await fake.started.wait()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(Overloaded, match="max_latency_ms=50"):
        await d.submit(Call(([2],)))
    assert loop.time() - started < 1.0
    assert d.queued_rows == 0
    fake.gate.set()
    assert await first == [2]
    assert await d.submit(Call(([3],))) == [6]
    await d.close()


async def test_multi_output_tuples_are_sliced_per_request() -> None:
    async def two(call: Call) -> Any:
        x = call.args[0]
        return (x + 1, [str(v) for v in x.tolist()])

    d = BatchDispatcher(two, max_batch_size=3, max_latency_s=5)
    x = np.arange(5)
    plus, names = await d.submit(Call((x,)))
    np.testing.assert_array_equal(plus, x + 1)
    assert names == ["0", "1", "2", "3", "4"]
    await d.close()


async def test_incompatible_layouts_go_to_separate_batches() -> None:
    seen: list[str] = []

    async def echo(call: Call) -> Any:
        seen.append(type(call.args[0]).__name__)
        await asyncio.sleep(0.01)
        return call.args[0]

    d = BatchDispatcher(echo, max_batch_size=10, max_latency_s=5)
    first = asyncio.create_task(d.submit(Call(([0],))))
    await asyncio.sleep(0)
    a = asyncio.create_task(d.submit(Call(([1],))))
    b = asyncio.create_task(d.submit(Call((np.ones(2),))))
    c = asyncio.create_task(d.submit(Call(([2],))))
    assert await a == [1]
    assert await c == [2]
    np.testing.assert_array_equal(await b, np.ones(2))
    assert await first == [0]
    assert seen == ["list", "list", "ndarray"]
    await d.close()


def test_cost_model_fit_recovers_slope_and_intercept() -> None:
    samples = [(n, 0.002 + 0.0001 * n) for n in (1, 5, 10, 50, 100)]
    a, b = fit_linear(samples)
    assert a == pytest.approx(0.0001)
    assert b == pytest.approx(0.002)
    assert fit_linear([(4, -1.0), (8, -2.0)]) == (0.0, 0.0)

"""Calling a runnable's methods: the one implementation the local handle and the server share.

Sync methods run on one dedicated thread per runnable instance, so the event loop never blocks
and a runnable (rarely thread-safe) sees one call at a time, like BentoML's CapacityLimiter(1).
Async methods are awaited on the caller's loop (BentoML returns the un-awaited coroutine, bug 2).
Generators are drained one item per hop onto that thread, so the loop stays free between items.

Two things exist for the runner server, which serves through this class via the local handle
(as BentoML's runner app serves through ``init_local``):

- **Exact busyness.** A call abandoned by a timed-out request keeps running on that thread;
  ``busy`` counts calls until their thread really finishes, not until their caller gives up.
- **Inline fast path.** Handing a call to a thread and back costs two thread wake-ups, about
  0.3-0.5 ms on a busy 2-core machine, which is a quarter of a 2 ms model. When the thread is
  idle and the caller says nothing else waits for the loop (the server's dispatcher asks only
  after a run of batches that each held a single request, for a method whose learned batch
  cost is at most ``INLINE_MAX_SECONDS``), the call runs inline on the loop thread: blocking
  it briefly costs no one anything. A method that ever overruns ``INLINE_TRIP_SECONDS``
  inline is never inlined again.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kuberunner.exceptions import StateException

INLINE_MAX_SECONDS = 0.01  # a GC pause worth of loop time, and only when nobody waits
INLINE_TRIP_SECONDS = 0.25  # far above scheduling hiccups of a busy node, far below a hang
_END = object()


def _next(iterator: Iterator[Any]) -> Any:
    return next(iterator, _END)


class Caller:
    """Calls the methods of one runnable instance (``runner`` names it in threads and errors)."""

    def __init__(self, runnable: object, runner: str) -> None:
        self.runnable = runnable
        self.runner = runner
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"kuberunner-{runner}"
        )
        self.busy = 0  # calls submitted to the thread and not finished there yet
        self._no_inline: set[str] = set()

    def method(self, name: str) -> Callable[..., Any]:
        return getattr(self.runnable, name)  # type: ignore[no-any-return]

    def run(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call ``name`` on the calling thread (``Runner.run``); an async method gets its own
        event loop, unless this thread already runs one, which it must not block."""
        result = self.method(name)(*args, **kwargs)
        if not inspect.iscoroutine(result):
            return result
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(result)
        result.close()
        raise StateException(
            f"'{self.runner}.{name}' is async and this thread runs an event loop: use "
            f"'await runner.{name}.async_run(...)' instead of run()."
        )

    async def _on_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        self.busy += 1
        future = self._executor.submit(func, *args)
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release))
        return await asyncio.wrap_future(future, loop=loop)

    def _release(self) -> None:
        self.busy -= 1

    async def call(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], inline: bool = False
    ) -> Any:
        """Run ``name``; ``inline`` asks for the fast path when it is safe (see module doc)."""
        func = self.method(name)
        if inspect.iscoroutinefunction(func):
            return await func(*args, **kwargs)
        if inline and self.busy == 0 and name not in self._no_inline:
            started = time.perf_counter()
            try:
                result = func(*args, **kwargs)
            finally:
                if time.perf_counter() - started > INLINE_TRIP_SECONDS:
                    self._no_inline.add(name)
        else:
            result = await self._on_thread(lambda: func(*args, **kwargs))
        if inspect.iscoroutine(result):  # a sync wrapper that returned a coroutine
            return await result
        return result

    async def stream(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        """Items of a generator / async generator method; a plain result is one item."""
        func = self.method(name)
        if inspect.isasyncgenfunction(func):
            async for item in func(*args, **kwargs):
                yield item
            return
        result = await self.call(name, args, kwargs)
        if isinstance(result, AsyncIterator):
            async for item in result:
                yield item
        elif isinstance(result, Iterator):
            while (item := await self._on_thread(_next, result)) is not _END:
                yield item  # one hop to the thread per item keeps the loop free
        else:
            yield result

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

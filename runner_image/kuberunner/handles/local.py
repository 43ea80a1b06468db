"""In-process handle: instantiates the runnable and calls its methods directly.

Sync methods run on one dedicated thread per handle, so the event loop never blocks and a
runnable (often not thread-safe) sees one call at a time, like BentoML's CapacityLimiter(1).
Async methods are awaited on the caller's loop (BentoML returns the un-awaited coroutine, bug 2).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from kuberunner.exceptions import InvalidArgument, StateException
from kuberunner.handles.base import RunnerHandle

if TYPE_CHECKING:
    from kuberunner.runner import Runner, RunnerMethod

_EXHAUSTED = object()


def batch_size(value: Any, batch_dim: int) -> int:
    """Batch size of one argument: `shape[batch_dim]` for arrays/frames, `len` for lists, else 1."""
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple):
        if not -len(shape) <= batch_dim < len(shape):
            raise InvalidArgument(f"argument of shape {shape} has no batch dimension {batch_dim}")
        return int(shape[batch_dim])
    if isinstance(value, list):
        return len(value)
    return 1


def check_batch_sizes(method: RunnerMethod, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Batchable methods take arguments that all share one batch size."""
    if not method.config.batchable:
        return
    dim = method.config.batch_dim[0]
    sizes = {batch_size(v, dim) for v in (*args, *kwargs.values())}
    if len(sizes) > 1:
        raise InvalidArgument("All batchable arguments must have the same batch size.")


def _next_or_exhausted(iterator: Iterator[Any]) -> Any:
    return next(iterator, _EXHAUSTED)


class LocalRunnerHandle(RunnerHandle):
    """Runs the runnable in this process."""

    def __init__(self, runner: Runner, *args: Any, **kwargs: Any) -> None:
        super().__init__(runner)
        self._runnable = runner.runnable_class(**runner.runnable_init_params)
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"kuberunner-{runner.name}"
        )

    def _callable(self, method: RunnerMethod) -> Callable[..., Any]:
        return getattr(self._runnable, method.name)  # type: ignore[no-any-return]

    async def is_ready(self, timeout: float) -> bool:
        return True

    def run_method(self, method: RunnerMethod, *args: Any, **kwargs: Any) -> Any:
        check_batch_sizes(method, args, kwargs)
        result = self._callable(method)(*args, **kwargs)
        if inspect.iscoroutine(result):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return asyncio.run(result)
            result.close()
            raise StateException(
                f"'{self.runner.name}.{method.name}' is async and this thread runs an event "
                f"loop: use 'await runner.{method.name}.async_run(...)' instead of run()."
            )
        return result

    async def async_run_method(self, method: RunnerMethod, *args: Any, **kwargs: Any) -> Any:
        check_batch_sizes(method, args, kwargs)
        func = self._callable(method)
        if inspect.iscoroutinefunction(func):
            return await func(*args, **kwargs)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(
            self._executor, functools.partial(func, *args, **kwargs)
        )
        if inspect.iscoroutine(result):  # a sync wrapper that returned a coroutine
            return await result
        return result

    async def async_stream_method(
        self, method: RunnerMethod, *args: Any, **kwargs: Any
    ) -> AsyncIterator[Any]:
        check_batch_sizes(method, args, kwargs)
        func = self._callable(method)
        if inspect.isasyncgenfunction(func):
            async for chunk in func(*args, **kwargs):
                yield chunk
            return
        result = await self.async_run_method(method, *args, **kwargs)
        if isinstance(result, AsyncIterator):
            async for chunk in result:
                yield chunk
        elif isinstance(result, Iterator):
            # One next() per hop onto the runnable's thread, so the loop stays free.
            loop = asyncio.get_running_loop()
            while True:
                chunk = await loop.run_in_executor(self._executor, _next_or_exhausted, result)
                if chunk is _EXHAUSTED:
                    return
                yield chunk
        else:
            yield result  # a non-streaming method streams its single result

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

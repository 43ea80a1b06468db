"""In-process handle: instantiates the runnable and calls it through ``handles.caller.Caller``.

The runner server serves through this handle too (``Runner.init_local``, as BentoML's runner
app does), so a method behaves the same in a test, a notebook and a runner pod.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from kuberunner.exceptions import InvalidArgument
from kuberunner.handles.base import RunnerHandle
from kuberunner.handles.caller import Caller

if TYPE_CHECKING:
    from kuberunner.runner import Runner, RunnerMethod


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


class LocalRunnerHandle(RunnerHandle):
    """Runs the runnable in this process; ``caller`` does the calling (the server uses it too)."""

    def __init__(self, runner: Runner, *args: Any, **kwargs: Any) -> None:
        super().__init__(runner)
        runnable = runner.runnable_class(**runner.runnable_init_params)
        self.caller = Caller(runnable, runner.name)

    async def is_ready(self, timeout: float) -> bool:
        return True

    def run_method(self, method: RunnerMethod, *args: Any, **kwargs: Any) -> Any:
        check_batch_sizes(method, args, kwargs)
        return self.caller.run(method.name, args, kwargs)

    async def async_run_method(self, method: RunnerMethod, *args: Any, **kwargs: Any) -> Any:
        check_batch_sizes(method, args, kwargs)
        return await self.caller.call(method.name, args, kwargs)

    async def async_stream_method(
        self, method: RunnerMethod, *args: Any, **kwargs: Any
    ) -> AsyncIterator[Any]:
        check_batch_sizes(method, args, kwargs)
        async for chunk in self.caller.stream(method.name, args, kwargs):
            yield chunk

    def close(self) -> None:
        self.caller.close()


def serve_locally(runner: Runner) -> Caller:
    """Initialise ``runner`` with a local handle and return the caller it serves through: the
    runner server's calls then take the same path as ``runner.<method>.async_run``."""
    runner.init_local(quiet=True)
    handle = runner._runner_handle
    assert isinstance(handle, LocalRunnerHandle)
    return handle.caller

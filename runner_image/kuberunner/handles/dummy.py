"""The handle of a runner that is not initialised: it can serve nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, NoReturn

from kuberunner.exceptions import StateException
from kuberunner.handles.base import RunnerHandle


def not_initialized_message(runner_name: str) -> str:
    return (
        f"Runner '{runner_name}' is not initialized: call runner.init_local() to run it in this "
        "process, or runner.init_client() to reach its runner server (a Service does this for "
        "the runners it lists)."
    )


class DummyRunnerHandle(RunnerHandle):
    """Every call raises a StateException that names the runner and says how to initialise it.

    BentoML's dummy handle names its own repr instead of the runner (bug 18) and reports ready
    (a runner with no handle cannot serve), so `is_ready` is False here.
    """

    def _fail(self) -> NoReturn:
        raise StateException(not_initialized_message(self.runner.name))

    async def is_ready(self, timeout: float) -> bool:
        return False

    def run_method(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        self._fail()

    async def async_run_method(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        self._fail()

    def async_stream_method(self, method: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        self._fail()

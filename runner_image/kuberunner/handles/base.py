"""The interface every runner handle implements (dummy, local, and the remote client)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kuberunner.runner import Runner, RunnerMethod


class RunnerHandle(ABC):
    """Carries out a runner's method calls.

    A handle is created by `Runner.init_local()` / `Runner.init_client()` as
    `handle_class(runner, *args, **kwargs)` and released by `Runner.destroy()` (`close()`) or
    `await Runner.adestroy()` (`aclose()`).
    """

    def __init__(self, runner: Runner, *args: Any, **kwargs: Any) -> None:
        self.runner = runner

    @abstractmethod
    async def is_ready(self, timeout: float) -> bool:
        """True when calls can be served; must return False rather than raise when not."""

    @abstractmethod
    def run_method(self, method: RunnerMethod, *args: Any, **kwargs: Any) -> Any:
        """Call `method` synchronously and return its result."""

    @abstractmethod
    async def async_run_method(self, method: RunnerMethod, *args: Any, **kwargs: Any) -> Any:
        """Call `method` and return its result without blocking the event loop."""

    @abstractmethod
    def async_stream_method(
        self, method: RunnerMethod, *args: Any, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """Call a streaming `method` and yield its chunks."""

    def close(self) -> None:  # noqa: B027  # optional hook: most handles hold nothing
        """Release resources synchronously."""

    async def aclose(self) -> None:
        """Release resources; handles holding async clients override this."""
        self.close()

"""`Runner`: a named, configured Runnable class plus the handle its calls go through.

Fixes relative to BentoML 1.2.20 (reference section 10): the per-runner config is found by the
lowercased name (bug 3); `batching.enabled: false` changes only this runner's method configs
(bug 4); a method named like a Runner attribute is an error (bug 6); calls without a handle name
the runner and say how to initialise it (bug 18), and such a runner is not ready; readiness
probes never raise (bug 13).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from kuberunner.config import RESERVED_RUNNER_KEYS, RunnerConfig, load_config
from kuberunner.exceptions import StateException
from kuberunner.handles.base import RunnerHandle
from kuberunner.handles.dummy import DummyRunnerHandle
from kuberunner.handles.local import LocalRunnerHandle
from kuberunner.runnable import RunnableMethodConfig, runnable_methods
from kuberunner.strategy import DefaultStrategy, ResourceRequest, Strategy

logger = logging.getLogger(__name__)

NAME_PATTERN: Final = re.compile(r"[a-z0-9]([-._a-z0-9]*[a-z0-9])?")
NAME_MAX_LENGTH: Final = 63
NAME_RULE: Final = (
    "a runner name must be at most 63 characters of lowercase letters, digits, '-', '_' or "
    "'.', and must start and end with a letter or digit"
)
DEFAULT_PROBE_TIMEOUT: Final = 1.0
# Set on every Runner instance; a runnable method with one of these names would be shadowed.
_INSTANCE_ATTRIBUTES: Final = frozenset(
    {
        "name",
        "runnable_class",
        "runnable_init_params",
        "models",
        "embedded",
        "scheduling_strategy",
        "config",
        "resource_config",
        "workers_per_resource",
        "runner_methods",
        "_runner_handle",
        "_methods",
        "_default",
    }
)


def normalize_runner_name(name: str) -> str:
    """Lowercase (with a warning) and validate a runner name."""
    if not isinstance(name, str):
        raise TypeError(f"Runner name must be a str, not {name!r}")
    lowered = name.lower()
    if lowered != name:
        logger.warning("Converting runner name '%s' to lowercase: '%s'", name, lowered)
    # fullmatch: BentoML's re.match + `$` lets a trailing newline through.
    if len(lowered) > NAME_MAX_LENGTH or NAME_PATTERN.fullmatch(lowered) is None:
        raise ValueError(f"Runner name '{lowered}' is not valid: {NAME_RULE}.")
    if lowered in RESERVED_RUNNER_KEYS:
        reserved = ", ".join(sorted(RESERVED_RUNNER_KEYS))
        raise ValueError(
            f"Runner name '{lowered}' is reserved: it is a key of the 'runners' config section "
            f"({reserved}); choose another name."
        )
    return lowered


@dataclass(frozen=True, eq=False)
class RunnerMethod:
    """One method of a Runner, with this runner's batching settings. Not callable itself."""

    runner: Runner
    name: str
    config: RunnableMethodConfig
    max_batch_size: int
    max_latency_ms: int
    doc: str | None = None

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return self.runner._runner_handle.run_method(self, *args, **kwargs)

    async def async_run(self, *args: Any, **kwargs: Any) -> Any:
        return await self.runner._runner_handle.async_run_method(self, *args, **kwargs)

    def async_stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        return self.runner._runner_handle.async_stream_method(self, *args, **kwargs)

    def __repr__(self) -> str:
        return f"RunnerMethod(runner={self.runner.name!r}, name={self.name!r})"


class AbstractRunner(ABC):
    """What every runner has: a name, models, resources, the runnable class, embedding."""

    name: str
    models: list[Any]
    resource_config: ResourceRequest
    runnable_class: type
    embedded: bool

    @abstractmethod
    def init_local(self, quiet: bool = False) -> None: ...

    @abstractmethod
    def init_client(
        self, handle_class: type[RunnerHandle] | None = None, *args: Any, **kwargs: Any
    ) -> None: ...


def _first(*values: int | None) -> int:
    for value in values:
        if value is not None:
            return value
    raise AssertionError("the config always provides a default")


class Runner(AbstractRunner):
    """A Runnable class bound to a name, a configuration and a handle."""

    def __init__(
        self,
        runnable_class: type,
        *,
        runnable_init_params: Mapping[str, Any] | None = None,
        name: str | None = None,
        scheduling_strategy: type[Strategy] = DefaultStrategy,
        models: list[Any] | None = None,
        max_batch_size: int | None = None,
        max_latency_ms: int | None = None,
        method_configs: Mapping[str, Mapping[str, int]] | None = None,
        embedded: bool = False,
    ) -> None:
        if not isinstance(runnable_class, type):
            raise TypeError(f"Runner needs a Runnable class, not {runnable_class!r}")
        if name is None:
            name = runnable_class.__name__.lower()
            logger.warning("Using lowercased runnable class name '%s' for runner.", name)
        self.name = normalize_runner_name(name)
        config = load_config().runner(self.name)
        methods = runnable_methods(runnable_class)
        if not methods:
            raise ValueError(f"Runnable class '{runnable_class.__name__}' has no methods!")
        self.runnable_class = runnable_class
        self.runnable_init_params = dict(runnable_init_params or {})
        self.models = list(models or [])
        self.embedded = embedded
        self.scheduling_strategy = scheduling_strategy
        self.config: RunnerConfig = config
        self.resource_config = config.resources
        self.workers_per_resource: int | float = config.workers_per_resource
        self._runner_handle: RunnerHandle = DummyRunnerHandle(self)
        self._methods: dict[str, RunnerMethod] = {}
        per_method = dict(method_configs or {})
        unknown = sorted(set(per_method) - set(methods))
        if unknown:
            raise ValueError(
                f"Runner '{self.name}': method_configs names unknown methods {unknown}; "
                f"methods are {sorted(methods)}"
            )
        for method_name, method in methods.items():
            self._check_method_name(method_name)
            batching = config.batching
            from_config = batching.methods.get(method_name)
            explicit = per_method.get(method_name, {})
            method_config = method.config
            if not batching.enabled and method_config.batchable:
                # A copy: the class-level config is shared by every Runner of the class.
                method_config = dataclasses.replace(method_config, batchable=False)
            self._methods[method_name] = RunnerMethod(
                runner=self,
                name=method_name,
                config=method_config,
                max_batch_size=_first(
                    explicit.get("max_batch_size"),
                    max_batch_size,
                    from_config.max_batch_size if from_config else None,
                    batching.max_batch_size,
                ),
                max_latency_ms=_first(
                    explicit.get("max_latency_ms"),
                    max_latency_ms,
                    from_config.max_latency_ms if from_config else None,
                    batching.max_latency_ms,
                ),
                doc=method.func.__doc__,
            )
        self.runner_methods = list(self._methods.values())
        if len(self._methods) == 1:
            self._default: RunnerMethod | None = self.runner_methods[0]
        else:
            self._default = self._methods.get("__call__")
            if self._default is None:
                logger.debug("Runner '%s' has no default method.", self.name)

    def _check_method_name(self, method_name: str) -> None:
        # The Runner's own attributes would shadow the method (BentoML silently overwrote them).
        if method_name != "__call__" and (
            hasattr(Runner, method_name) or method_name in vars(self)
        ):
            raise ValueError(
                f"Runnable '{self.runnable_class.__name__}' has a method named '{method_name}', "
                f"which clashes with the Runner attribute '{method_name}'; rename the method."
            )

    def __getattr__(self, item: str) -> RunnerMethod:
        # Only called when normal lookup fails: exposes `runner.<method>`.
        methods = self.__dict__.get("_methods")
        if methods is not None and item in methods:
            return methods[item]  # type: ignore[no-any-return]
        raise AttributeError(f"Runner '{self.__dict__.get('name')}' has no method '{item}'")

    def __repr__(self) -> str:
        return f"Runner(name={self.name!r}, runnable_class={self.runnable_class.__name__})"

    @property
    def default_method(self) -> RunnerMethod | None:
        """The method `run` / `async_run` call: the only method, else `__call__`, else None."""
        return self._default

    def _require_default(self) -> RunnerMethod:
        if self._default is None:
            raise AttributeError(
                f"Runner '{self.name}' has no default method: it has {len(self._methods)} "
                f"methods and none is named '__call__'; call runner.<method>.run(...) with one "
                f"of {sorted(self._methods)}"
            )
        return self._default

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Call the default method."""
        return self._require_default().run(*args, **kwargs)

    async def async_run(self, *args: Any, **kwargs: Any) -> Any:
        """Call the default method without blocking the event loop."""
        return await self._require_default().async_run(*args, **kwargs)

    # Handles

    def _set_handle(self, handle_class: type[RunnerHandle], *args: Any, **kwargs: Any) -> None:
        if not isinstance(self._runner_handle, DummyRunnerHandle):
            raise StateException(
                f"Runner '{self.name}' is already initialized; call destroy() before "
                "initializing it again."
            )
        self._runner_handle = handle_class(self, *args, **kwargs)

    def init_local(self, quiet: bool = False) -> None:
        """Run the runnable in this process (for debugging and tests)."""
        if not quiet:
            logger.warning(
                "'Runner.init_local' is for debugging and testing only. Make sure to remove it "
                "before deploying to production."
            )
        try:
            self._set_handle(LocalRunnerHandle)
        except StateException:
            raise
        except Exception:
            logger.exception(
                "An exception occurred while instantiating runner '%s', see details below:",
                self.name,
            )
            raise

    def init_client(
        self, handle_class: type[RunnerHandle] | None = None, *args: Any, **kwargs: Any
    ) -> None:
        """Send calls to a runner server; the default handle is `kuberunner.handles.remote`'s."""
        if handle_class is None:
            from kuberunner.handles.remote import (  # type: ignore[import-not-found,unused-ignore]
                RemoteRunnerHandle,  # lazy: httpx is only needed for remote runners
            )

            handle_class = RemoteRunnerHandle
        self._set_handle(handle_class, *args, **kwargs)

    def destroy(self) -> None:
        """Release the handle; calls fail again until the runner is initialised."""
        handle, self._runner_handle = self._runner_handle, DummyRunnerHandle(self)
        handle.close()

    async def adestroy(self) -> None:
        """Like `destroy()`, awaiting the handle's async cleanup (remote clients)."""
        handle, self._runner_handle = self._runner_handle, DummyRunnerHandle(self)
        await handle.aclose()

    async def runner_handle_is_ready(self, timeout: float = DEFAULT_PROBE_TIMEOUT) -> bool:
        """Whether calls can be served now; errors (e.g. connection refused) count as not ready."""
        try:
            return bool(await self._runner_handle.is_ready(timeout))
        except Exception:
            logger.debug("Readiness probe of runner '%s' failed.", self.name, exc_info=True)
            return False

    # Scheduling

    @property
    def scheduled_worker_count(self) -> int:
        return self.scheduling_strategy.get_worker_count(
            self.runnable_class, self.resource_config, self.workers_per_resource
        )

    @property
    def scheduled_worker_env_map(self) -> dict[int, dict[str, str]]:
        return {
            index: self.scheduling_strategy.get_worker_env(
                self.runnable_class, self.resource_config, self.workers_per_resource, index
            )
            for index in range(self.scheduled_worker_count)
        }

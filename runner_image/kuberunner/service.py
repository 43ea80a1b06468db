"""The legacy `Service`: a name, its runners and `@svc.api` endpoints served by the API server."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar, overload

import anyio.to_thread

from kuberunner.io import IODescriptor
from kuberunner.runner import AbstractRunner

_F = TypeVar("_F", bound=Callable[..., Any])
_SERVICE_NAME: Final = re.compile(r"[a-z0-9]([-._a-z0-9]*[a-z0-9])?")
_API_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class InferenceAPI:
    """One endpoint: `POST <route>` decodes with `input`, calls `func`, encodes with `output`."""

    name: str
    func: Callable[..., Any]
    input: IODescriptor
    output: IODescriptor
    route: str
    doc: str | None = None

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)

    async def invoke(self, value: Any) -> Any:
        """Call the function; sync ones run in an AnyIO worker thread (so they may block)."""
        if self.is_async:
            return await self.func(value)
        return await anyio.to_thread.run_sync(self.func, value)


class Service:
    """`Service(name, runners=[...])`; runner names must be unique within the service."""

    def __init__(self, name: str, *, runners: Sequence[AbstractRunner] | None = None) -> None:
        lowered = name.lower() if isinstance(name, str) else name
        if not isinstance(lowered, str) or not (
            len(lowered) <= 63 and _SERVICE_NAME.fullmatch(lowered)
        ):
            raise ValueError(
                f"Service name {name!r} is not valid: at most 63 characters of lowercase "
                "letters, digits, '-', '_' or '.', starting and ending with a letter or digit."
            )
        self.name = lowered
        self.runners: list[AbstractRunner] = []
        seen: set[str] = set()
        for runner in runners or []:
            if not isinstance(runner, AbstractRunner):
                raise TypeError(f"Service '{lowered}': {runner!r} is not a Runner")
            if runner.name in seen:
                raise ValueError(f"Found duplicate name `{runner.name}` in service runners.")
            seen.add(runner.name)
            self.runners.append(runner)
        self.apis: dict[str, InferenceAPI] = {}

    def __repr__(self) -> str:
        return f"Service(name={self.name!r}, runners={[r.name for r in self.runners]})"

    def runner(self, name: str) -> AbstractRunner:
        for runner in self.runners:
            if runner.name == name:
                return runner
        raise KeyError(f"Service '{self.name}' has no runner '{name}'")

    @overload
    def api(
        self,
        func: _F,
        *,
        input: IODescriptor,
        output: IODescriptor,
        name: str | None = None,
        route: str | None = None,
        doc: str | None = None,
    ) -> _F: ...

    @overload
    def api(
        self,
        func: None = None,
        *,
        input: IODescriptor,
        output: IODescriptor,
        name: str | None = None,
        route: str | None = None,
        doc: str | None = None,
    ) -> Callable[[_F], _F]: ...

    def api(
        self,
        func: _F | None = None,
        *,
        input: IODescriptor,  # BentoML's keyword name
        output: IODescriptor,
        name: str | None = None,
        route: str | None = None,
        doc: str | None = None,
    ) -> _F | Callable[[_F], _F]:
        """Register an endpoint; returns the function unchanged."""

        def register(f: _F) -> _F:
            api_name = name or f.__name__
            if not _API_NAME.fullmatch(api_name):
                raise ValueError(f"API name {api_name!r} is not a valid Python identifier")
            api_route = route or f"/{api_name}"
            if not api_route.startswith("/"):
                api_route = f"/{api_route}"
            if api_name in self.apis:
                raise ValueError(f"Service '{self.name}' already has an API named '{api_name}'")
            if any(a.route == api_route for a in self.apis.values()):
                raise ValueError(f"Service '{self.name}' already has an API at '{api_route}'")
            if not isinstance(input, IODescriptor) or not isinstance(output, IODescriptor):
                raise TypeError("input and output must be IO descriptors, e.g. JSON()")
            self.apis[api_name] = InferenceAPI(
                api_name, f, input, output, api_route, doc or f.__doc__
            )
            return f

        return register if func is None else register(func)

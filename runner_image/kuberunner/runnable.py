"""`Runnable`: the user class whose marked methods a Runner serves.

Methods are marked with `@Runnable.method` (bare or called) or added with `add_method`. Each
class sees the methods it defines plus those it inherits; a subclass never adds methods to its
parent (BentoML registers subclass methods into the parent's dict, section 10 bug 5), because
the registry is computed from the class's own MRO instead of a shared mutable dict.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, overload

from kuberunner.exceptions import KuberunnerException

_CAPABILITIES = ("SUPPORTED_RESOURCES", "SUPPORTS_CPU_MULTI_THREADING")


@dataclass(frozen=True)
class RunnableMethodConfig:
    """How a method may be called: batching and streaming. `batch_dim` is (input, output)."""

    batchable: bool = False
    batch_dim: tuple[int, int] = (0, 0)
    input_spec: Any = None  # stored for introspection; unused by the runner path, as in BentoML
    output_spec: Any = None
    is_stream: bool = False


def _batch_dims(batch_dim: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(batch_dim, tuple):
        if len(batch_dim) != 2 or not all(isinstance(d, int) for d in batch_dim):
            raise TypeError(
                f"batch_dim must be an int or an (input, output) pair, not {batch_dim!r}"
            )
        return batch_dim
    if isinstance(batch_dim, bool) or not isinstance(batch_dim, int):
        raise TypeError(f"batch_dim must be an int or an (input, output) pair, not {batch_dim!r}")
    return (batch_dim, batch_dim)


class RunnableMethod:
    """A marked method: the function plus its config. On an instance it is a bound method."""

    def __init__(self, func: Callable[..., Any], config: RunnableMethodConfig) -> None:
        self.func = func
        self.config = config
        self.name: str = getattr(func, "__name__", "")
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> RunnableMethod: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> Callable[..., Any]: ...

    def __get__(
        self, instance: object | None, owner: type | None = None
    ) -> RunnableMethod | Callable[..., Any]:
        if instance is None:
            return self
        # MethodType keeps inspect.iscoroutinefunction / isgeneratorfunction truthful.
        return types.MethodType(self.func, instance)

    def __repr__(self) -> str:
        return f"RunnableMethod({self.name!r}, {self.config})"


def _make_method(
    func: Callable[..., Any],
    batchable: bool,
    batch_dim: int | tuple[int, int],
    input_spec: Any,
    output_spec: Any,
) -> RunnableMethod:
    if not callable(func):
        raise TypeError(f"Runnable.method needs a function, not {func!r}")
    is_stream = inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func)
    config = RunnableMethodConfig(
        batchable=bool(batchable),
        batch_dim=_batch_dims(batch_dim),
        input_spec=input_spec,
        output_spec=output_spec,
        is_stream=is_stream,
    )
    return RunnableMethod(func, config)


class Runnable:
    """Base class of runnables. Subclasses set the two capability attributes."""

    SUPPORTED_RESOURCES: ClassVar[tuple[str, ...]]
    SUPPORTS_CPU_MULTI_THREADING: ClassVar[bool]

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _CAPABILITIES:
            raise KuberunnerException(
                f"{name} should not be set at runtime; the change will not be reflected in the "
                "scheduling strategy. Instead, create separate Runnables with different supported "
                "resource configurations."
            )
        super().__setattr__(name, value)

    @overload
    @staticmethod
    def method(
        meth: Callable[..., Any],
        *,
        batchable: bool = False,
        batch_dim: int | tuple[int, int] = 0,
        input_spec: Any = None,
        output_spec: Any = None,
    ) -> RunnableMethod: ...

    @overload
    @staticmethod
    def method(
        meth: None = None,
        *,
        batchable: bool = False,
        batch_dim: int | tuple[int, int] = 0,
        input_spec: Any = None,
        output_spec: Any = None,
    ) -> Callable[[Callable[..., Any]], RunnableMethod]: ...

    @staticmethod
    def method(
        meth: Callable[..., Any] | None = None,
        *,
        batchable: bool = False,
        batch_dim: int | tuple[int, int] = 0,
        input_spec: Any = None,
        output_spec: Any = None,
    ) -> RunnableMethod | Callable[[Callable[..., Any]], RunnableMethod]:
        """Mark a method as callable through a Runner; usable as `@method` or `@method(...)`."""

        def decorate(func: Callable[..., Any]) -> RunnableMethod:
            return _make_method(func, batchable, batch_dim, input_spec, output_spec)

        return decorate if meth is None else decorate(meth)

    @classmethod
    def add_method(
        cls,
        method: Callable[..., Any],
        name: str,
        *,
        batchable: bool = False,
        batch_dim: int | tuple[int, int] = 0,
        input_spec: Any = None,
        output_spec: Any = None,
    ) -> None:
        """Add a method after the class is defined (e.g. for generated classes)."""
        meth = _make_method(method, batchable, batch_dim, input_spec, output_spec)
        setattr(cls, name, meth)
        meth.__set_name__(cls, name)


class _DefinitionOnly:
    """Wraps `method` / `add_method` so that they work on the class but not on instances.

    A descriptor instead of `__getattribute__`, so ordinary attribute reads on a runnable (hot
    in inference code) cost nothing extra.
    """

    def __init__(self, name: str, inner: Any) -> None:
        self.name = name
        self.inner = inner

    def __get__(self, instance: object | None, owner: type) -> Any:
        if instance is not None:
            raise KuberunnerException(
                f"{self.name} should not be used at runtime; instead, use "
                f"{owner.__name__}.{self.name} where you define the class."
            )
        return self.inner.__get__(None, owner)


for _name in ("method", "add_method"):
    setattr(Runnable, _name, _DefinitionOnly(_name, Runnable.__dict__[_name]))


def runnable_methods(runnable_class: type) -> dict[str, RunnableMethod]:
    """The class's runnable methods in definition order, base classes first.

    A name redefined in a subclass as a plain attribute is no longer a runnable method.
    """
    names: dict[str, None] = {}
    for klass in reversed(runnable_class.__mro__):
        names.update(dict.fromkeys(vars(klass)))
    found: dict[str, RunnableMethod] = {}
    for name in names:
        value = inspect.getattr_static(runnable_class, name)
        if isinstance(value, RunnableMethod):
            found[name] = value
    return found

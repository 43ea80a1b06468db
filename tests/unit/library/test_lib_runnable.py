"""Runnable: method marking, configs, add_method, per-class registries and runtime guards."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from kuberunner import KuberunnerException, Runnable, RunnableMethod, Runner
from kuberunner.runnable import runnable_methods


class Base(Runnable):
    SUPPORTED_RESOURCES = ("cpu",)
    SUPPORTS_CPU_MULTI_THREADING = False

    @Runnable.method
    def bare(self, x: int) -> int:
        """Doubles x."""
        return x * 2

    @Runnable.method(batchable=True, batch_dim=(0, 1), input_spec="in", output_spec="out")
    def called(self, x: list[int]) -> list[int]:
        return x

    @Runnable.method()
    async def coro(self, x: int) -> int:
        return x

    @Runnable.method
    def gen(self, n: int) -> Iterator[int]:
        yield from range(n)

    @Runnable.method
    async def agen(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i


def test_decorator_bare_and_called_build_configs() -> None:
    methods = runnable_methods(Base)
    assert list(methods) == ["bare", "called", "coro", "gen", "agen"]
    bare, called = methods["bare"].config, methods["called"].config
    assert (bare.batchable, bare.batch_dim, bare.is_stream) == (False, (0, 0), False)
    assert (called.batchable, called.batch_dim) == (True, (0, 1))
    assert (called.input_spec, called.output_spec) == ("in", "out")
    assert [methods[m].config.is_stream for m in ("coro", "gen", "agen")] == [False, True, True]


def test_int_batch_dim_means_same_dim_in_and_out() -> None:
    class Dim(Runnable):
        @Runnable.method(batchable=True, batch_dim=2)
        def f(self, x: object) -> object:
            return x

    assert runnable_methods(Dim)["f"].config.batch_dim == (2, 2)


def test_descriptor_on_class_and_instance() -> None:
    assert isinstance(Base.__dict__["bare"], RunnableMethod)
    assert isinstance(Base.bare, RunnableMethod)
    assert Base().bare(4) == 8
    assert Base.bare.__doc__ == "Doubles x."


def test_add_method() -> None:
    class Dynamic(Runnable):
        pass

    def triple(self: object, x: int) -> int:
        return x * 3

    Dynamic.add_method(triple, "triple", batchable=True, batch_dim=1)
    method = runnable_methods(Dynamic)["triple"]
    assert method.name == "triple"
    assert (method.config.batchable, method.config.batch_dim) == (True, (1, 1))
    assert Dynamic().triple(2) == 3 * 2  # type: ignore[attr-defined]


def test_bug_5_subclass_methods_do_not_leak_into_the_parent() -> None:
    class Parent(Runnable):
        @Runnable.method
        def shared(self) -> str:
            return "parent"

    class Child(Parent):
        @Runnable.method
        def extra(self) -> str:
            return "child"

    class Sibling(Parent):
        pass

    Sibling.add_method(lambda self: "added", "added")
    assert list(runnable_methods(Parent)) == ["shared"]
    assert list(runnable_methods(Child)) == ["shared", "extra"]
    assert list(runnable_methods(Sibling)) == ["shared", "added"]
    # In BentoML, Runner(Parent) would now also expose 'extra' and 'added'.
    assert [m.name for m in Runner(Parent, name="parent").runner_methods] == ["shared"]


def test_subclass_can_override_a_method() -> None:
    class Child(Base):
        @Runnable.method(batchable=True)
        def bare(self, x: int) -> int:
            return x * 10

        gen = None  # type: ignore[assignment]  # no longer a runnable method

    methods = runnable_methods(Child)
    assert methods["bare"].config.batchable is True
    assert "gen" not in methods
    assert Child().bare(1) == 10


def test_capabilities_cannot_be_set_at_runtime() -> None:
    runnable = Base()
    with pytest.raises(KuberunnerException, match="SUPPORTED_RESOURCES should not be set"):
        runnable.SUPPORTED_RESOURCES = ("nvidia.com/gpu",)  # type: ignore[misc]
    with pytest.raises(KuberunnerException, match="SUPPORTS_CPU_MULTI_THREADING should not"):
        runnable.SUPPORTS_CPU_MULTI_THREADING = True  # type: ignore[misc]
    runnable.other = 1  # ordinary attributes still work
    assert runnable.other == 1  # type: ignore[attr-defined]


def test_definition_helpers_are_not_usable_on_instances() -> None:
    with pytest.raises(KuberunnerException, match=r"use Base\.method where you define"):
        _ = Base().method
    with pytest.raises(KuberunnerException, match=r"use Base\.add_method"):
        _ = Base().add_method


def test_runnable_without_methods_is_rejected_by_runner() -> None:
    class Empty(Runnable):
        pass

    with pytest.raises(ValueError, match="Runnable class 'Empty' has no methods!"):
        Runner(Empty)


def test_runner_needs_a_class() -> None:
    with pytest.raises(TypeError, match="needs a Runnable class"):
        Runner(Base(), name="instance")  # type: ignore[arg-type]

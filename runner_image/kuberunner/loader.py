"""Resolve ``MODULE:ATTR`` into a Runner named as the operator asked."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from kuberunner.runner import Runner


class TargetError(ValueError):
    """The target cannot be imported or is not a Runnable class / Runner."""


def import_target(target: str) -> Any:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise TargetError(f"target must look like MODULE:CLASS, got {target!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the working directory is importable
    module = importlib.import_module(module_name)
    value: Any = module
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise TargetError(f"{module_name!r} has no attribute {attr!r}") from None
    return value


def build_runner(target: str, name: str) -> Runner:
    """A Runner for ``target``: a Runnable class (wrapped with ``name``) or a Runner instance."""
    value = import_target(target)
    if isinstance(value, Runner):
        if value.name != name:
            raise TargetError(f"{target} is the runner {value.name!r}, not {name!r}")
        return value
    if isinstance(value, type):
        return Runner(value, name=name)
    raise TargetError(f"{target} is a {type(value).__name__}, not a Runnable class or a Runner")

"""Recursive merging of JSON-like mappings, the rule of every layered setting in kuberunner."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``: mappings on both sides merge recursively; any other value
    (lists included, or a type conflict) replaces. The result is a deep copy: it shares nothing
    with either input, so callers may mutate it freely."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged

"""Row arithmetic for batching: count, split and merge calls; slice and join results.

A batchable call's arguments (positional and keyword alike) are lists or numpy arrays that
share one row count along the input ``batch_dim``. Results are a list or array with one row per
input row along the output ``batch_dim``, or a tuple of those (multi-output). Every function is
pure, so the dispatcher's bookkeeping stays simple and unit tests need no server.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from kuberunner.wire import Call, is_ndarray

try:
    import numpy as np
except ImportError:  # pragma: no cover - without numpy only lists are batched
    np = None  # type: ignore[assignment]


class BatchError(ValueError):
    """Arguments or results that do not fit the batching contract (a 400 or a 500)."""


def _rows_of(value: Any, dim: int, what: str) -> int:
    if is_ndarray(value):
        if value.ndim <= dim:
            raise BatchError(f"{what} has {value.ndim} dimension(s); batch_dim is {dim}")
        return int(value.shape[dim])
    if isinstance(value, list):
        if dim != 0:
            raise BatchError(f"{what} is a list; lists batch only along dimension 0, not {dim}")
        return len(value)
    raise BatchError(f"{what} must be a list or a numpy array, got {type(value).__name__}")


def _values(call: Call) -> list[tuple[str, Any]]:
    named = [(f"argument {i}", v) for i, v in enumerate(call.args)]
    named += [(f"argument {k!r}", v) for k, v in call.kwargs.items()]
    return named


def count_rows(call: Call, dim: int) -> int:
    """Rows in a call; every argument must agree."""
    if len(call.args) == 1 and not call.kwargs:  # the common case, on every request
        return _rows_of(call.args[0], dim, "argument 0")
    named = _values(call)
    if not named:
        raise BatchError("a batchable method needs at least one list or array argument")
    counts = {what: _rows_of(v, dim, what) for what, v in named}
    distinct = set(counts.values())
    if len(distinct) != 1:
        raise BatchError(f"all batchable arguments must have the same batch size, got {counts}")
    return distinct.pop()


def merge_key(call: Call, dim: int) -> Hashable:
    """Calls with equal keys can be concatenated (same argument layout, dtypes, row shapes)."""

    def shape_of(value: Any) -> Hashable:
        if is_ndarray(value):
            shape = value.shape
            # dtype objects compare and hash by layout, and cost less than building dtype.str
            return ("nd", value.dtype, shape[:dim] + shape[dim + 1 :])
        return ("list",)

    if len(call.args) == 1 and not call.kwargs:  # the common case, on every request
        return (shape_of(call.args[0]),)
    return (
        tuple(shape_of(v) for v in call.args),
        tuple(sorted((k, shape_of(v)) for k, v in call.kwargs.items())),
    )


def _take(value: Any, start: int, stop: int, dim: int) -> Any:
    if is_ndarray(value):
        index = [slice(None)] * value.ndim
        index[dim] = slice(start, stop)
        return value[tuple(index)]
    return value[start:stop]


def split_call(call: Call, at: int, dim: int) -> tuple[Call, Call]:
    """(first ``at`` rows, the rest), for positional and keyword arguments alike."""
    head = Call(
        tuple(_take(v, 0, at, dim) for v in call.args),
        {k: _take(v, 0, at, dim) for k, v in call.kwargs.items()},
    )
    tail = Call(
        tuple(_take(v, at, None, dim) for v in call.args),  # type: ignore[arg-type]
        {k: _take(v, at, None, dim) for k, v in call.kwargs.items()},  # type: ignore[arg-type]
    )
    return head, tail


def _concat(parts: Sequence[Any], dim: int) -> Any:
    first = parts[0]
    if len(parts) == 1:
        return first
    if is_ndarray(first):
        return np.concatenate(parts, axis=dim)
    merged: list[Any] = []
    for part in parts:
        merged.extend(part)
    return merged


def merge_calls(calls: Sequence[Call], dim: int) -> Call:
    """Concatenate calls that share a ``merge_key``, argument by argument."""
    first = calls[0]
    if len(calls) == 1:
        return first
    args = tuple(_concat([c.args[i] for c in calls], dim) for i in range(len(first.args)))
    kwargs = {k: _concat([c.kwargs[k] for c in calls], dim) for k in first.kwargs}
    return Call(args, kwargs)


def _slice_one(result: Any, sizes: Sequence[int], dim: int) -> list[Any]:
    total = sum(sizes)
    got = _rows_of(result, dim, "the batch result")
    if got != total:
        raise BatchError(f"the method returned {got} rows for a batch of {total} input rows")
    out = []
    start = 0
    for size in sizes:
        out.append(_take(result, start, start + size, dim))
        start += size
    return out


def slice_result(result: Any, sizes: Sequence[int], dim: int) -> list[Any]:
    """Split a batch result into one result per request (``sizes`` rows each)."""
    if isinstance(result, tuple):  # multi-output: slice every output the same way
        columns = [_slice_one(r, sizes, dim) for r in result]
        return [tuple(col[i] for col in columns) for i in range(len(sizes))]
    return _slice_one(result, sizes, dim)


def join_results(parts: Sequence[Any], dim: int) -> Any:
    """Reassemble the results of a request that was split across batches."""
    if len(parts) == 1:
        return parts[0]
    if isinstance(parts[0], tuple):
        return tuple(_concat([p[i] for p in parts], dim) for i in range(len(parts[0])))
    return _concat(parts, dim)

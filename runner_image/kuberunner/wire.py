"""The runner wire format: how call arguments and results travel over HTTP.

Shared by the runner server and the remote client, so both sides agree byte for byte. The
formats, chosen by Content-Type (see docs/wire-format.md):

- JSON: request ``{"args": [...], "kwargs": {...}}``, response the bare value.
- NPY: one numpy array as a ``.npy`` file, loaded with ``allow_pickle=False``. A request body in
  this format is the single positional argument.
- Bundle: a small frame holding a JSON tree plus ``.npy`` buffers, for anything that mixes
  arrays with other values (several array arguments, multi-output tuples).
- Pickle: only when the server was started with ``--allow-pickle``; otherwise it is rejected
  before a single byte is unpickled.

Unlike BentoML's payload protocol, nothing here unpickles by default (reference section 5.4).
"""

from __future__ import annotations

import io
import json
import math
import pickle
import struct
from dataclasses import dataclass, field
from typing import Any

try:  # numpy is optional for the library; the runner image always installs it.
    import numpy as np
except ImportError:  # pragma: no cover - exercised only without numpy
    np = None  # type: ignore[assignment]

JSON = "application/json"
NPY = "application/x-kuberunner-npy"
BUNDLE = "application/x-kuberunner-bundle"
PICKLE = "application/x-kuberunner-pickle"
NDJSON = "application/x-ndjson"

# On a 503, this header says the call never ran because this replica is loading or shutting
# down: the caller may send it again at once (a new connection may reach another replica).
# Overload answers do not carry it: retrying them on the spot would only add load.
RETRY_ELSEWHERE = "kuberunner-retry-elsewhere"

BUNDLE_MAGIC = b"KRB1"
_HEADER_LEN = struct.Struct(">I")

# Single-key dicts with these keys are markers inside a bundle tree.
_ND = "$ndarray"
_TUPLE = "$tuple"
_DICT = "$dict"


class WireError(ValueError):
    """A body that cannot be decoded; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Call:
    """The arguments of one method call."""

    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    if not content_type:
        return JSON
    return content_type.split(";", 1)[0].strip().lower()


def is_ndarray(value: object) -> bool:
    return np is not None and isinstance(value, np.ndarray)


# --- npy ------------------------------------------------------------------------------------


# Parsing a .npy header with numpy costs ~100 us (ast.literal_eval), more than the rest of a
# request. Clients send the same few headers over and over, so each distinct header is parsed
# once by numpy itself (which validates it and refuses object dtypes) and then reused.
_NPY_MAGIC = b"\x93NUMPY"
_NPY_CACHE_SIZE = 256
_npy_layouts: dict[bytes, tuple[Any, tuple[int, ...], bool, int]] = {}
_npy_headers: dict[tuple[str, tuple[int, ...]], bytes] = {}


def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    """A version 1.0 header for a C-ordered array, padded to 64 bytes like numpy's."""
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
    padding = 63 - (10 + len(text)) % 64
    encoded = (text + " " * padding + "\n").encode("latin-1")
    return _NPY_MAGIC + b"\x01\x00" + struct.pack("<H", len(encoded)) + encoded


def dump_npy(array: Any) -> bytes:
    if array.dtype.hasobject or array.dtype.names is not None or array.dtype.subdtype:
        buf = io.BytesIO()  # unusual dtypes: numpy's own writer (still without pickle)
        np.save(buf, array, allow_pickle=False)
        return buf.getvalue()
    if not array.flags.c_contiguous:  # (ascontiguousarray would turn 0-d into 1-d)
        array = np.ascontiguousarray(array)
    key = (array.dtype.str, array.shape)
    header = _npy_headers.get(key)
    if header is None:
        header = _npy_header(array.dtype.str, array.shape)
        if len(_npy_headers) < _NPY_CACHE_SIZE:
            _npy_headers[key] = header
    data: bytes = array.tobytes()
    return header + data


def _npy_layout(data: bytes | memoryview) -> tuple[bytes, tuple[Any, tuple[int, ...], bool, int]]:
    if bytes(data[:6]) != _NPY_MAGIC or len(data) < 10:
        raise WireError(400, "invalid .npy body: missing the \\x93NUMPY magic")
    major = data[6]
    if major == 1:
        (size,) = struct.unpack_from("<H", data, 8)
        start = 10
    else:
        (size,) = struct.unpack_from("<I", data, 8)
        start = 12
    header = bytes(data[: start + size])
    layout = _npy_layouts.get(header)
    if layout is None:
        array = np.load(io.BytesIO(data), allow_pickle=False)  # full validation, once
        layout = (array.dtype, array.shape, bool(np.isfortran(array)), start + size)
        if len(_npy_layouts) < _NPY_CACHE_SIZE:
            _npy_layouts[header] = layout
    return header, layout


def load_npy(data: bytes | memoryview) -> Any:
    if np is None:
        raise WireError(415, f"{NPY} needs numpy, which is not installed")
    try:
        _, (dtype, shape, fortran, offset) = _npy_layout(data)
        count = math.prod(shape)
        if len(data) - offset != count * dtype.itemsize:
            raise ValueError(f"{len(data) - offset} data bytes for shape {shape} of {dtype}")
        flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        # A private, writable copy: runnables may modify their inputs in place.
        return flat.reshape(shape, order="F" if fortran else "C").copy(order="K")
    except WireError:
        raise
    except ValueError as exc:  # includes object arrays, which would need pickle
        raise WireError(400, f"invalid .npy body: {exc}") from exc
    except Exception as exc:
        raise WireError(400, f"invalid .npy body: {type(exc).__name__}: {exc}") from exc


# --- bundle ---------------------------------------------------------------------------------


def _contains_array(value: Any) -> bool:
    if is_ndarray(value):
        return True
    if isinstance(value, list | tuple):
        return any(_contains_array(v) for v in value)
    if isinstance(value, dict):
        return any(_contains_array(v) for v in value.values())
    return False


def _to_tree(value: Any, buffers: list[bytes]) -> Any:
    if is_ndarray(value):
        buffers.append(dump_npy(value))
        return {_ND: len(buffers) - 1}
    if isinstance(value, tuple):
        return {_TUPLE: [_to_tree(v, buffers) for v in value]}
    if isinstance(value, list):
        return [_to_tree(v, buffers) for v in value]
    if isinstance(value, dict):
        tree = {str(k): _to_tree(v, buffers) for k, v in value.items()}
        # A user dict that looks like a marker is wrapped so it cannot be misread.
        if len(tree) == 1 and next(iter(tree)).startswith("$"):
            return {_DICT: tree}
        return tree
    if np is not None and isinstance(value, np.generic):
        return value.item()
    return value


def _from_tree(tree: Any, buffers: list[Any]) -> Any:
    if isinstance(tree, list):
        return [_from_tree(v, buffers) for v in tree]
    if isinstance(tree, dict):
        if len(tree) == 1:
            ((key, inner),) = tree.items()
            if key == _ND:
                if not isinstance(inner, int) or not 0 <= inner < len(buffers):
                    raise WireError(400, f"bundle refers to missing buffer {inner!r}")
                return buffers[inner]
            if key == _TUPLE:
                if not isinstance(inner, list):
                    raise WireError(400, f"bundle {_TUPLE} must hold a list")
                return tuple(_from_tree(v, buffers) for v in inner)
            if key == _DICT:
                if not isinstance(inner, dict):
                    raise WireError(400, f"bundle {_DICT} must hold an object")
                return {k: _from_tree(v, buffers) for k, v in inner.items()}
        return {k: _from_tree(v, buffers) for k, v in tree.items()}
    return tree


def dump_bundle(value: Any) -> bytes:
    buffers: list[bytes] = []
    tree = _to_tree(value, buffers)
    header = json.dumps(
        {"value": tree, "buffers": [len(b) for b in buffers]}, separators=(",", ":")
    ).encode()
    return b"".join([BUNDLE_MAGIC, _HEADER_LEN.pack(len(header)), header, *buffers])


def load_bundle(body: bytes) -> Any:
    if np is None:
        raise WireError(415, f"{BUNDLE} needs numpy, which is not installed")
    view = memoryview(body)
    prefix = len(BUNDLE_MAGIC) + _HEADER_LEN.size
    if len(body) < prefix or bytes(view[:4]) != BUNDLE_MAGIC:
        raise WireError(400, "invalid bundle body: missing KRB1 magic")
    (header_len,) = _HEADER_LEN.unpack_from(body, 4)
    if prefix + header_len > len(body):
        raise WireError(400, "invalid bundle body: header runs past the end")
    try:
        header = json.loads(bytes(view[prefix : prefix + header_len]))
        sizes = header["buffers"]
        tree = header["value"]
    except (ValueError, KeyError, TypeError) as exc:
        raise WireError(400, f"invalid bundle header: {exc}") from exc
    if not isinstance(sizes, list) or not all(isinstance(s, int) and s >= 0 for s in sizes):
        raise WireError(400, "invalid bundle header: buffers must be a list of sizes")
    offset = prefix + header_len
    if offset + sum(sizes) != len(body):
        raise WireError(400, "invalid bundle body: buffer sizes do not add up to the body")
    arrays = []
    for size in sizes:
        arrays.append(load_npy(view[offset : offset + size]))
        offset += size
    return _from_tree(tree, arrays)


# --- requests (client encodes, server decodes) ---------------------------------------------


def encode_call(
    args: tuple[Any, ...], kwargs: dict[str, Any], *, pickled: bool = False
) -> tuple[str, bytes]:
    """Pick the leanest format for a call: npy for one array, bundle if arrays, else JSON."""
    if pickled:
        return PICKLE, pickle.dumps(Call(tuple(args), dict(kwargs)), protocol=5)
    if len(args) == 1 and not kwargs and is_ndarray(args[0]):
        return NPY, dump_npy(args[0])
    payload = {"args": list(args), "kwargs": kwargs}
    if _contains_array(payload):
        return BUNDLE, dump_bundle(payload)
    return JSON, json.dumps(payload, separators=(",", ":"), default=_json_default).encode()


def _call_from_mapping(payload: Any) -> Call:
    if not isinstance(payload, dict):
        raise WireError(400, 'body must be an object {"args": [...], "kwargs": {...}}')
    unknown = sorted(set(payload) - {"args", "kwargs"})
    if unknown:
        raise WireError(400, f"unknown body field(s) {unknown}; expected 'args' and 'kwargs'")
    args = payload.get("args", [])
    kwargs = payload.get("kwargs", {})
    if not isinstance(args, list | tuple):
        raise WireError(400, f"'args' must be a list, got {type(args).__name__}")
    if not isinstance(kwargs, dict):
        raise WireError(400, f"'kwargs' must be an object, got {type(kwargs).__name__}")
    return Call(tuple(args), kwargs)


def decode_call(content_type: str | None, body: bytes, *, allow_pickle: bool) -> Call:
    kind = media_type(content_type)
    if kind == JSON:
        if not body.strip():
            return Call()
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise WireError(400, f"body is not valid JSON: {exc}") from exc
        return _call_from_mapping(payload)
    if kind == NPY:
        return Call((load_npy(body),))
    if kind == BUNDLE:
        return _call_from_mapping(load_bundle(body))
    if kind == PICKLE:
        if not allow_pickle:
            raise WireError(415, f"{PICKLE} is disabled; start the server with --allow-pickle")
        try:
            call = pickle.loads(body)
        except Exception as exc:
            raise WireError(400, f"invalid pickle body: {type(exc).__name__}: {exc}") from exc
        if not isinstance(call, Call):
            raise WireError(400, "pickle body must hold a kuberunner Call")
        return call
    raise WireError(415, f"unsupported Content-Type {kind!r}; use {JSON}, {NPY} or {BUNDLE}")


# --- results (server encodes, client decodes) ----------------------------------------------


def _json_default(value: Any) -> Any:
    if np is not None and isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"result of type {type(value).__name__} is not JSON serialisable")


def _json_default_arrays(value: Any) -> Any:
    if is_ndarray(value):
        return value.tolist()
    return _json_default(value)


# Built once: json.dumps with arguments builds a new encoder per call (~1.3 us of ~5.5 for a row).
_JSON = json.JSONEncoder(separators=(",", ":"), default=_json_default)
_JSON_ARRAYS = json.JSONEncoder(separators=(",", ":"), default=_json_default_arrays)


def encode_result(
    value: Any, *, pickled: bool = False, json_only: bool = False
) -> tuple[str, bytes]:
    """Encode a return value. Raises TypeError when it cannot be represented."""
    if pickled:
        return PICKLE, pickle.dumps(value, protocol=5)
    if json_only:  # the caller asked for JSON (Accept header): arrays become nested lists
        return JSON, _JSON_ARRAYS.encode(value).encode()
    if is_ndarray(value):
        if value.dtype.hasobject:
            raise TypeError("object arrays cannot be sent without pickle")
        return NPY, dump_npy(value)
    if _contains_array(value):
        return BUNDLE, dump_bundle(value)
    return JSON, _JSON.encode(value).encode()


def decode_result(content_type: str | None, body: bytes, *, allow_pickle: bool = False) -> Any:
    kind = media_type(content_type)
    if kind == JSON:
        return json.loads(body)
    if kind == NPY:
        return load_npy(body)
    if kind == BUNDLE:
        return load_bundle(body)
    if kind == PICKLE and allow_pickle:
        return pickle.loads(body)
    raise WireError(415, f"unexpected result Content-Type {kind!r}")


def encode_stream_item(item: Any) -> bytes:
    """One NDJSON line per yielded item, so item boundaries survive TCP coalescing."""
    return _JSON_ARRAYS.encode(item).encode() + b"\n"

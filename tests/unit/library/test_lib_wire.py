"""Wire format round trips and refusals (pure, no server)."""

from __future__ import annotations

import io
import pickle
import struct

import numpy as np
import pytest

from kuberunner import wire
from kuberunner.wire import Call, WireError

ARRAYS = [
    np.ones((1, 16), dtype=np.float32),
    np.arange(24).reshape(2, 3, 4),
    np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    np.array(3.5),
    np.zeros((0, 4)),
    np.array(["ab", "c"]),
    np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
    np.arange(10)[::2],
    np.ones((2, 2), dtype=">i8"),
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{a.shape}")
def test_npy_round_trip_matches_numpy_both_ways(array: np.ndarray) -> None:
    ours = wire.dump_npy(array)
    theirs = io.BytesIO()
    np.save(theirs, array)
    assert np.array_equal(np.load(io.BytesIO(ours), allow_pickle=False), array)
    for body in (ours, theirs.getvalue(), ours):  # the last one hits the header cache
        loaded = wire.load_npy(body)
        assert loaded.dtype == array.dtype
        assert loaded.shape == array.shape
        assert np.array_equal(loaded, array)
        assert loaded.flags.writeable


def test_npy_refuses_object_arrays_and_truncated_bodies() -> None:
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(WireError) as info:
        wire.load_npy(buf.getvalue())
    assert info.value.status == 400
    good = wire.dump_npy(np.ones(4))
    wire.load_npy(good)  # cache the header, then send it with a short body
    with pytest.raises(WireError, match="data bytes for shape"):
        wire.load_npy(good[:-8])
    with pytest.raises(WireError, match="magic"):
        wire.load_npy(b"not an npy file at all")


def test_bundle_round_trips_trees_with_arrays_tuples_and_marker_like_dicts() -> None:
    value = {
        "args": [(np.ones(2), [np.arange(3), "text"]), {"$ndarray": 5}, None],
        "kwargs": {"scale": np.float32(2.5), "nested": {"k": (1, 2)}},
    }
    body = wire.dump_bundle(value)
    back = wire.load_bundle(body)
    first, marker, none = back["args"]
    assert isinstance(first, tuple)
    np.testing.assert_array_equal(first[0], np.ones(2))
    np.testing.assert_array_equal(first[1][0], np.arange(3))
    assert first[1][1] == "text"
    assert marker == {"$ndarray": 5}  # a user dict, not a buffer reference
    assert none is None
    assert back["kwargs"] == {"scale": 2.5, "nested": {"k": (1, 2)}}


def frame(header: bytes) -> bytes:
    return b"KRB1" + struct.pack(">I", len(header)) + header


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"XXXX\x00\x00\x00\x02{}", "magic"),
        (b"KRB1\x00\x00\x00\x02{}", "header"),
        (frame(b'{"value":1,"buffers":[100]}'), "do not add up"),
        (frame(b'{"value":{"$ndarray":3},"buffers":[]}'), "missing buffer 3"),
        (frame(b'{"value":1}'), "invalid bundle header"),
    ],
)
def test_bundle_refuses_malformed_frames(body: bytes, fragment: str) -> None:
    with pytest.raises(WireError, match=fragment) as info:
        wire.load_bundle(body)
    assert info.value.status == 400


def test_encode_call_picks_the_leanest_format() -> None:
    x = np.ones((2, 3))
    assert wire.encode_call((x,), {})[0] == wire.NPY
    assert wire.encode_call((x, x), {})[0] == wire.BUNDLE
    assert wire.encode_call((), {"x": x})[0] == wire.BUNDLE
    kind, body = wire.encode_call(([1, 2],), {"k": "v"})
    assert kind == wire.JSON
    assert wire.decode_call(kind, body, allow_pickle=False) == Call(([1, 2],), {"k": "v"})
    kind, body = wire.encode_call((x, "a"), {"y": x})
    call = wire.decode_call(kind, body, allow_pickle=False)
    np.testing.assert_array_equal(call.args[0], x)
    assert call.args[1] == "a"
    np.testing.assert_array_equal(call.kwargs["y"], x)


def test_pickle_is_only_loaded_when_allowed() -> None:
    kind, body = wire.encode_call(([1],), {}, pickled=True)
    assert kind == wire.PICKLE
    with pytest.raises(WireError) as info:
        wire.decode_call(kind, body, allow_pickle=False)
    assert info.value.status == 415
    assert wire.decode_call(kind, body, allow_pickle=True) == Call(([1],), {})
    with pytest.raises(WireError, match="must hold a kuberunner Call"):
        wire.decode_call(kind, pickle.dumps([1]), allow_pickle=True)


def test_content_type_parameters_and_missing_type() -> None:
    body = b'{"args": [1]}'
    assert wire.decode_call("application/json; charset=utf-8", body, allow_pickle=False).args == (
        1,
    )
    assert wire.decode_call(None, body, allow_pickle=False).args == (1,)
    assert wire.decode_call("application/json", b"", allow_pickle=False) == Call()
    with pytest.raises(WireError) as info:
        wire.decode_call("text/csv", body, allow_pickle=False)
    assert info.value.status == 415


def test_results_encode_by_shape_of_value() -> None:
    assert wire.encode_result([1, (2, 3)]) == (wire.JSON, b"[1,[2,3]]")
    kind, body = wire.encode_result(np.arange(3))
    assert kind == wire.NPY
    np.testing.assert_array_equal(wire.decode_result(kind, body), np.arange(3))
    kind, body = wire.encode_result((np.arange(2), 7))
    assert kind == wire.BUNDLE
    out = wire.decode_result(kind, body)
    assert isinstance(out, tuple)
    assert out[1] == 7
    assert wire.encode_result(np.arange(2), json_only=True) == (wire.JSON, b"[0,1]")
    with pytest.raises(TypeError, match="set is not JSON serialisable"):
        wire.encode_result({1})
    with pytest.raises(TypeError, match="object arrays"):
        wire.encode_result(np.array([object()]))


def test_stream_items_are_single_ndjson_lines() -> None:
    assert wire.encode_stream_item("a\nb") == b'"a\\nb"\n'
    assert wire.encode_stream_item({"i": 1}) == b'{"i":1}\n'

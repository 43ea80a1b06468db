"""Legacy Service and IO descriptors."""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pytest
from pydantic import BaseModel

from kuberunner import InvalidArgument, Runnable, Runner, Service
from kuberunner.io import JSON, NumpyNdarray, Text


class Echo(Runnable):
    SUPPORTED_RESOURCES = ("cpu",)
    SUPPORTS_CPU_MULTI_THREADING = False

    @Runnable.method
    def echo(self, x: object) -> object:
        return x


def test_service_holds_its_runners() -> None:
    a, b = Runner(Echo, name="a"), Runner(Echo, name="b")
    svc = Service("My_Service", runners=[a, b])
    assert svc.name == "my_service"
    assert svc.runners == [a, b]
    assert svc.runner("b") is b
    with pytest.raises(KeyError, match="no runner 'c'"):
        svc.runner("c")


def test_duplicate_runner_names_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"Found duplicate name `a` in service runners\."):
        Service("svc", runners=[Runner(Echo, name="a"), Runner(Echo, name="A")])


def test_non_runners_and_bad_names_are_rejected() -> None:
    with pytest.raises(TypeError, match="is not a Runner"):
        Service("svc", runners=[Echo])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="Service name 'bad name' is not valid"):
        Service("bad name")


async def test_api_registers_sync_and_async_endpoints() -> None:
    svc = Service("svc")
    caller_threads: list[str] = []

    @svc.api(input=JSON(), output=JSON())
    def classify(body: dict[str, int]) -> dict[str, int]:
        """Adds one."""
        caller_threads.append(threading.current_thread().name)
        return {"y": body["x"] + 1}

    @svc.api(input=Text(), output=Text(), name="shout", route="loud")
    async def upper(text: str) -> str:
        return text.upper()

    assert classify({"x": 1}) == {"y": 2}  # the decorator returns the function itself
    assert list(svc.apis) == ["classify", "shout"]
    api = svc.apis["classify"]
    assert (api.route, api.doc, api.is_async) == ("/classify", "Adds one.", False)
    assert svc.apis["shout"].route == "/loud"
    assert svc.apis["shout"].is_async
    assert await api.invoke({"x": 41}) == {"y": 42}
    assert caller_threads[-1] != threading.main_thread().name  # sync endpoints run off-loop
    assert await svc.apis["shout"].invoke("hi") == "HI"


def test_duplicate_api_names_and_routes_are_rejected() -> None:
    svc = Service("svc")

    @svc.api(input=JSON(), output=JSON())
    def predict(x: object) -> object:
        return x

    with pytest.raises(ValueError, match="already has an API named 'predict'"):
        svc.api(predict, input=JSON(), output=JSON())
    with pytest.raises(ValueError, match="already has an API at '/predict'"):
        svc.api(predict, input=JSON(), output=JSON(), name="other", route="/predict")


def test_json_descriptor() -> None:
    desc = JSON()
    assert desc.decode(b'{"a": [1, 2]}') == {"a": [1, 2]}
    assert desc.decode(b"") is None
    body, content_type = desc.encode({"arr": np.arange(3), "n": np.int64(2)})
    assert (json.loads(body), content_type) == ({"arr": [0, 1, 2], "n": 2}, "application/json")
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        desc.decode(b"{nope")


def test_json_descriptor_with_a_model() -> None:
    class Point(BaseModel):
        x: int
        y: int

    desc = JSON(pydantic_model=Point)
    assert desc.decode(b'{"x": 1, "y": 2}') == Point(x=1, y=2)
    assert json.loads(desc.encode(Point(x=3, y=4))[0]) == {"x": 3, "y": 4}
    with pytest.raises(InvalidArgument, match="does not match the schema"):
        desc.decode(b'{"x": 1}')


def test_text_descriptor() -> None:
    assert Text().decode("héllo".encode()) == "héllo"
    assert Text().encode("ok") == (b"ok", "text/plain; charset=utf-8")
    with pytest.raises(InvalidArgument, match="not UTF-8"):
        Text().decode(b"\xff\xfe")


def test_numpy_descriptor() -> None:
    desc = NumpyNdarray(dtype="float32", shape=(-1, 2), enforce_shape=True)
    array = desc.decode(b"[[1, 2], [3, 4]]", "application/json")
    assert array.dtype == np.float32
    assert array.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    buffer = io.BytesIO()
    np.save(buffer, np.ones((3, 2), dtype=np.int64))
    loaded = desc.decode(buffer.getvalue(), "application/x-kuberunner-npy")
    assert loaded.shape == (3, 2)
    assert desc.encode(np.eye(2)) == (b"[[1.0, 0.0], [0.0, 1.0]]", "application/json")
    with pytest.raises(InvalidArgument, match=r"expected shape \(-1, 2\)"):
        desc.decode(b"[1, 2, 3]")
    with pytest.raises(InvalidArgument, match="expected dtype"):
        NumpyNdarray(dtype="int64", enforce_dtype=True).decode(b"[1.5]")


def test_numpy_descriptor_refuses_pickled_arrays() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidArgument, match="not an array"):
        NumpyNdarray().decode(buffer.getvalue(), "application/x-kuberunner-npy")

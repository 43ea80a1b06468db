"""The remote handle's pure parts: error answers to exceptions, addresses from the runner map."""

from __future__ import annotations

import json

import httpx
import pytest

from kuberunner import InvalidArgument, NotFound, RemoteException, ServiceUnavailable
from kuberunner.exceptions import ConfigError
from kuberunner.handles.remote import error_for, runner_address


def test_client_maps_error_answers_to_library_exceptions() -> None:
    def answer(status: int, error: str) -> httpx.Response:
        return httpx.Response(status, json={"error": error})

    assert isinstance(error_for("r", answer(400, "bad")), InvalidArgument)
    assert isinstance(error_for("r", answer(404, "no route /x")), NotFound)
    assert isinstance(error_for("r", answer(503, "busy")), ServiceUnavailable)
    err = error_for("r", answer(500, "ValueError: boom"))
    assert isinstance(err, RemoteException)
    assert str(err) == "runner 'r' answered 500: ValueError: boom"
    plain = error_for("r", httpx.Response(502, text="Bad Gateway"))
    assert str(plain) == "runner 'r' answered 502: Bad Gateway"


def test_runner_address_comes_from_the_runner_map() -> None:
    env = {"KUBERUNNER_RUNNER_MAP": json.dumps({"a": "http://a:3000"})}
    assert runner_address("a", env) == "http://a:3000"
    with pytest.raises(ConfigError, match="no URL for runner 'b'"):
        runner_address("b", env)
    with pytest.raises(ConfigError, match="no address for runner 'a'"):
        runner_address("a", {})

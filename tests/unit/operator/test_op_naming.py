"""Child names are valid DNS labels, fit in 63 characters and never collide."""

from __future__ import annotations

import re

import pytest

from kuberunner_operator import naming

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

PAIRS = [
    ("demo", "tok_a"),
    ("demo", "tok-a"),
    ("demo", "tok.a"),
    ("demo", "b-c"),
    ("demo-b", "c"),
    ("a", "b-c"),
    ("a-b", "c"),
    ("9lives", "9runner"),
    ("x" * 253, "y" * 63),
    ("x" * 253, "y" * 62 + "z"),
    ("svc.with.dots", "r"),
    ("svc-with-dots", "r"),
    ("s", "a" * 63),
]


@pytest.mark.parametrize(("service", "runner"), PAIRS)
def test_runner_names_are_dns_labels(service: str, runner: str) -> None:
    name = naming.runner_object_name(service, runner)
    assert DNS_1035.match(name), name
    assert len(name) <= 63


def test_runner_names_never_collide() -> None:
    names = {naming.runner_object_name(s, r) for s, r in PAIRS}
    assert len(names) == len(PAIRS)


def test_runner_names_are_stable_and_readable() -> None:
    first = naming.runner_object_name("demo", "tok_a")
    assert first == naming.runner_object_name("demo", "tok_a")
    assert first.startswith("demo-tok-a-")


@pytest.mark.parametrize("service", ["demo", "9lives", "x" * 253, "a.b", "api"])
def test_api_server_name(service: str) -> None:
    name = naming.api_server_object_name(service)
    assert DNS_1035.match(name), name
    assert len(name) <= 63
    runner_names = {naming.runner_object_name(service, r) for r in ("api", "api-server", "a")}
    assert name not in runner_names


def test_api_server_name_is_plain_when_it_can_be() -> None:
    assert naming.api_server_object_name("demo") == "demo-api"


@pytest.mark.parametrize("text", ["demo", "tok_a", "x" * 253, "a.b.c", "-lead", "ünïcode"])
def test_label_values_are_valid_and_distinct(text: str) -> None:
    value = naming.label_value(text)
    assert LABEL_VALUE.match(value), value
    assert len(value) <= 63
    assert naming.label_value(text + "x") != value


def test_labels_carry_the_contract_keys() -> None:
    labels = naming.common_labels("demo", naming.RUNNER_COMPONENT, "tok_a")
    assert labels == {
        "app.kubernetes.io/name": "kuberunner",
        "app.kubernetes.io/instance": "demo",
        "app.kubernetes.io/component": "runner",
        "app.kubernetes.io/managed-by": "kuberunner",
        "kuberunner.io/service": "demo",
        "kuberunner.io/runner": "tok_a",
    }
    api = naming.common_labels("demo", naming.API_SERVER_COMPONENT, None)
    assert "kuberunner.io/runner" not in api
    assert api["app.kubernetes.io/component"] == "api-server"

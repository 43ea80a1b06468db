"""The server-side apply body: JSON that the API server's YAML decoder also accepts."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kuberunner_operator.kube import apply_body

CASES = [
    "hi \U0001f600 \u2713",
    "\U0001f600\U0010ffff\U00010000",
    "\\ud83d\\ude00",  # literal backslashes, not an escape
    "\\\U0001f600",  # an escaped backslash right before a real non-BMP character
    'tab\t nl\n cr\r nul\x00 del\x7f nel\x85 ls\u2028 bom\ufeff quote" slash/',
    "plain ascii",
]


@pytest.mark.parametrize("value", CASES)
def test_round_trips_through_yaml_and_json(value: str) -> None:
    obj: dict[str, Any] = {"env": [{"name": "X", "value": value}], "n": 1, "b": None}
    body = apply_body(obj)
    assert body.isascii()
    assert yaml.safe_load(body) == obj


def test_non_bmp_characters_use_the_8_digit_yaml_escape() -> None:
    body = apply_body({"v": "hi \U0001f600"})
    assert body == '{"v":"hi \\U0001F600"}'
    assert "\\ud83d" not in body.lower()


def test_escaped_backslashes_are_not_taken_for_surrogate_escapes() -> None:
    assert apply_body({"v": "\\ud83d\\ude00"}) == '{"v":"\\\\ud83d\\\\ude00"}'
    assert apply_body({"v": "\\\U0001f600"}) == '{"v":"\\\\\\U0001F600"}'


def test_control_characters_stay_escaped() -> None:
    body = apply_body({"v": "\x00\x1f\x7f\x85\u2028"})
    assert body == '{"v":"\\u0000\\u001f\\u007f\\u0085\\u2028"}'

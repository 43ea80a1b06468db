"""Reliability suite: faults, bad input and load against real processes and the dev cluster.

`.venv/bin/pytest tests/reliability` runs the short variant (a few minutes);
`--reliability-long` runs the long one (bigger bursts, more fuzz cases, longer overload).
Each test records its figures with the `figures` fixture; they are printed at the end of the
run (terminal summary "reliability figures") so RELIABILITY.md can quote them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# Reuse the operator subprocess helpers of the integration tests (tests/integration).
sys.path.insert(0, str(HERE.parent / "integration"))

_FIGURES: list[tuple[str, str, object]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-long",
        action="store_true",
        default=False,
        help="run the long reliability variants (200-service bursts, 500+ fuzzed manifests, "
        "30 s overload)",
    )


@pytest.fixture(scope="session")
def long_run(request: pytest.FixtureRequest) -> bool:
    """True with --reliability-long."""
    return bool(request.config.getoption("--reliability-long"))


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[[str, object], None]:
    """`figures(name, value)` records a figure of this test for the end-of-run summary."""

    def record(name: str, value: object) -> None:
        _FIGURES.append((request.node.name, name, value))
        request.node.user_properties.append((name, value))

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("reliability figures")
    for test, name, value in _FIGURES:
        terminalreporter.write_line(f"{test}: {name} = {value}")

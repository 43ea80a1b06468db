"""Session fixture `bentoml_oracle`: BentoML 1.2.20's DefaultStrategy in a separate venv.

The venv is created once and cached (see `oracle_venv.py`). If it cannot be installed the tests
that use it are skipped with a loud reason, except under `CI=true`, where they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from oracle_venv import OracleInstallError, ensure_oracle_venv

SERVER = Path(__file__).with_name("bentoml_oracle_server.py")
TIMINGS: dict[str, float] = {}


class BentoMLOracle:
    """A long-lived oracle process spoken to over JSON lines."""

    def __init__(self, python: Path) -> None:
        self._proc = subprocess.Popen(
            [str(python), str(SERVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        hello = self._read()
        if hello != {"ready": True}:
            raise RuntimeError(f"oracle did not start: {hello!r}")

    def _read(self) -> Any:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"oracle exited with code {self._proc.poll()}")
        return json.loads(line)

    def ask(self, case: dict[str, Any]) -> dict[str, Any]:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(case) + "\n")
        self._proc.stdin.flush()
        answer: dict[str, Any] = self._read()
        return answer

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


@pytest.fixture(scope="session")
def bentoml_oracle() -> Iterator[BentoMLOracle]:
    try:
        python, seconds = ensure_oracle_venv()
    except OracleInstallError as exc:
        reason = f"BentoML 1.2.20 ORACLE NOT INSTALLED, strategy parity NOT CHECKED: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        print(f"\n*** {reason}\n", file=sys.stderr)
        pytest.skip(reason)
    TIMINGS["oracle install (0 = cached)"] = seconds
    started = time.monotonic()
    oracle = BentoMLOracle(python)
    TIMINGS["oracle start"] = time.monotonic() - started
    try:
        yield oracle
    finally:
        oracle.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMINGS:
        terminalreporter.section("BentoML oracle timings")
        for what, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{what}: {seconds:.1f} s")

"""Finding a dead cluster's leftovers on the host by what live processes name."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kuberunner_dev.cluster.hostres import processes_mentioning


@pytest.fixture
def component(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A process that names a file in a state dir, as etcd's `--data-dir=STATE/etcd` does."""
    state = tmp_path / "state-2"
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", f"--data-dir={state}/etcd"]
    )
    try:
        yield proc, state
    finally:
        proc.kill()
        proc.wait()


def test_a_process_naming_a_file_in_the_dir_mentions_it(
    component: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, state = component
    assert proc.pid in [ref.pid for ref in processes_mentioning(f"{state}/")]


def test_a_dir_whose_name_is_a_prefix_of_the_named_one_is_not_mentioned(
    component: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, state = component
    shorter = state.with_name("state")  # `state/` must not match `state-2/etcd`
    assert proc.pid not in [ref.pid for ref in processes_mentioning(f"{shorter}/")]


def test_a_process_that_ended_is_not_found(
    component: tuple[subprocess.Popen[bytes], Path],
) -> None:
    proc, state = component
    proc.kill()
    proc.wait()
    assert proc.pid not in [ref.pid for ref in processes_mentioning(f"{state}/")]

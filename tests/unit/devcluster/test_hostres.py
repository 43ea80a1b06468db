"""Finding a dead cluster's leftovers on the host by what live processes name."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kuberunner_dev.cluster.hostres import processes_mentioning


@pytest.fixture
def component(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A process that names a file in a state dir, as etcd's `--data-dir=STATE/etcd` does."""
    state = tmp_path / "state-2"
    arg = f"--data-dir={state}/etcd"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", arg])
    try:
        # Popen returns after the fork; until the exec, /proc shows pytest's own command line.
        deadline = time.monotonic() + 10
        while arg.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0"):
            assert time.monotonic() < deadline, "the child never ran"
            time.sleep(0.01)
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

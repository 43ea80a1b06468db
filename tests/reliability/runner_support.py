"""Start the runner server of the reliability suite and read its processes (no tests here)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from fixtures.runnables.serving import FIXTURES, ServerProcess, group_members, run_server

HERE = Path(__file__).resolve().parent


def server_env(
    workers: int = 1, overrides: Mapping[str, Any] | None = None, **extra: str
) -> dict[str, str]:
    env = {
        "KUBERUNNER_WORKER_ENV_MAP": json.dumps({str(i): {} for i in range(workers)}),
        "PYTHONPATH": os.pathsep.join([str(HERE), str(FIXTURES), os.environ.get("PYTHONPATH", "")]),
        **extra,
    }
    if overrides:
        env["KUBERUNNER_CONFIG_OVERRIDES"] = json.dumps(overrides)
    return env


@contextlib.contextmanager
def serve(
    target: str,
    name: str,
    tmp: Path,
    *flags: str,
    env: Mapping[str, str] | None = None,
    ready: bool = True,
) -> Iterator[ServerProcess]:
    """`kuberunner runner serve target --name name *flags` on 127.0.0.1, stopped afterwards."""
    args = ["runner", "serve", target, "--name", name, *flags]
    with run_server(args, tmp, env or server_env()) as server:
        if ready:
            server.wait_for("/readyz")
        yield server


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def group_rss(server: ServerProcess) -> int:
    """Resident memory of the supervisor and all its workers, in bytes."""
    return sum(rss_bytes(pid) for pid in group_members(server.proc.pid))


def worker_pids(server: ServerProcess) -> set[int]:
    return set(group_members(server.proc.pid)) - {server.proc.pid}

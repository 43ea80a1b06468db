"""Pod-wide server state shared by the supervisor and its workers through a directory.

Kubelet's probe lands on whichever worker the kernel hands the connection to, so every worker
must give the same answer. The truth lives in files under ``$TMPDIR`` (the only writable place
on a read-only root filesystem): one ``ready/<index>`` file per loaded worker holding its pid,
and a ``draining`` file written by the supervisor when SIGTERM arrives. The Prometheus
multiprocess directory lives beside them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class StateDir:
    def __init__(self, root: Path, worker_count: int) -> None:
        self.root = root
        self.worker_count = worker_count
        self.ready_dir = root / "ready"
        self.prometheus_dir = root / "prometheus"
        self.draining_file = root / "draining"

    @classmethod
    def create(cls, name: str, worker_count: int) -> StateDir:
        root = Path(tempfile.mkdtemp(prefix=f"kuberunner-{name}-"))  # honours $TMPDIR
        state = cls(root, worker_count)
        state.ready_dir.mkdir()
        state.prometheus_dir.mkdir()
        return state

    # --- written by workers ----------------------------------------------------------------

    def mark_ready(self, index: int) -> None:
        tmp = self.ready_dir / f".{index}.tmp"
        tmp.write_text(str(os.getpid()))
        tmp.replace(self.ready_dir / str(index))  # atomic: a probe never reads half a file

    def record_load_error(self, index: int, error: str) -> None:
        """Why worker `index` could not load its runnable (one line), for the supervisor to
        report when it gives up: that line ends the container's log, which Kubernetes keeps
        as its termination message."""
        tmp = self.root / f".load-error-{index}.tmp"
        tmp.write_text(error.splitlines()[0][:500] if error else "")
        tmp.replace(self.root / f"load-error-{index}")

    def load_error(self, index: int) -> str | None:
        try:
            return (self.root / f"load-error-{index}").read_text() or None
        except FileNotFoundError:
            return None

    # --- written by the supervisor ---------------------------------------------------------

    def mark_not_ready(self, index: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.ready_dir / str(index)).unlink()

    def start_draining(self) -> None:
        self.draining_file.touch()

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # --- read by every worker on /readyz ---------------------------------------------------

    def draining(self) -> bool:
        return self.draining_file.exists()

    def ready_workers(self) -> int:
        count = 0
        for index in range(self.worker_count):
            try:
                pid = int((self.ready_dir / str(index)).read_text())
            except (FileNotFoundError, ValueError):
                continue
            if _pid_alive(pid):  # a crashed worker's file may outlive it for a moment
                count += 1
        return count

    def pod_ready(self) -> tuple[bool, str]:
        """(ready, reason) for the whole pod."""
        if self.draining():
            return False, "shutting down"
        ready = self.ready_workers()
        if ready < self.worker_count:
            return False, f"{ready}/{self.worker_count} workers ready"
        return True, f"{ready}/{self.worker_count} workers ready"

"""Pod-wide server state shared by the supervisor and its workers through a directory.

Kubelet's probe lands on whichever worker the kernel hands the connection to, so every worker
must give the same answer. The truth lives in files under ``$TMPDIR`` (the only writable place
on a read-only root filesystem): one ``ready/<index>`` file per loaded worker holding its pid,
a ``loading-<index>`` file holding when that worker began loading, a ``started`` file holding
when the supervisor started, and a ``draining`` file written by the supervisor when SIGTERM
arrives. The Prometheus multiprocess directory lives beside them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any


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
        self.started_file = root / "started"

    @classmethod
    def create(cls, name: str, worker_count: int) -> StateDir:
        root = Path(tempfile.mkdtemp(prefix=f"kuberunner-{name}-"))  # honours $TMPDIR
        state = cls(root, worker_count)
        state.ready_dir.mkdir()
        state.prometheus_dir.mkdir()
        state._write(state.started_file, repr(time.time()))
        return state

    def _write(self, path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)  # atomic: a probe never reads half a file

    def _read_float(self, path: Path) -> float | None:
        try:
            return float(path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    # --- written by workers ----------------------------------------------------------------

    def mark_loading(self, index: int) -> None:
        """Worker `index` begins loading its runnable (again, after a restart)."""
        self._write(self.root / f"loading-{index}", repr(time.time()))

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

    def _worker_ready(self, index: int) -> bool:
        try:
            pid = int((self.ready_dir / str(index)).read_text())
        except (FileNotFoundError, ValueError):
            return False
        return _pid_alive(pid)  # a crashed worker's file may outlive it for a moment

    def ready_workers(self) -> int:
        return sum(1 for index in range(self.worker_count) if self._worker_ready(index))

    def readiness(self) -> dict[str, Any]:
        """The /readyz body: which workers are loading and for how long, which failed, so
        that status can say `workers 1/2 ready, worker 1 loading for 38s`."""
        now = time.time()
        ready = 0
        loading: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for index in range(self.worker_count):
            if self._worker_ready(index):
                ready += 1
                continue
            error = self.load_error(index)
            if error is not None:
                failed.append({"worker": index, "error": error})
                continue
            since = self._read_float(self.root / f"loading-{index}")
            if since is not None:
                loading.append({"worker": index, "seconds": round(max(0.0, now - since), 1)})
        draining = self.draining()
        return {
            "ready": ready == self.worker_count and not draining,
            "workers": self.worker_count,
            "readyWorkers": ready,
            "loading": loading,
            "failed": failed,
            "startedAt": self._read_float(self.started_file),
            "draining": draining,
        }

    def pod_ready(self) -> tuple[bool, str]:
        """(ready, reason) for the whole pod."""
        if self.draining():
            return False, "shutting down"
        ready = self.ready_workers()
        if ready < self.worker_count:
            return False, f"{ready}/{self.worker_count} workers ready"
        return True, f"{ready}/{self.worker_count} workers ready"

"""The shared work and batch counters of the peer programs (stdlib only: every peer's venv runs it).

``work(rows)`` is the model of every server in the bench: 2 ms per batch, slept or (``cpu``)
spun on the CPU. It counts rows and batches; a daemon thread writes the counts as JSON to the
file named by ``KUBERUNNER_BENCH_STATS`` (when set) five times a second, so the bench reads
rows per batch from servers that publish no such metric. One process per file.
"""

from __future__ import annotations

import json
import os
import threading
import time

WORK_SECONDS = float(os.environ.get("KUBERUNNER_BENCH_WORK_SECONDS", "0.002"))
CPU_WORK = os.environ.get("KUBERUNNER_BENCH_CPU_WORK") == "1"
_counts = [0, 0]  # rows, batches
_started = False


def work(rows: int) -> None:
    if CPU_WORK:
        end = time.perf_counter() + WORK_SECONDS
        while time.perf_counter() < end:
            pass
    else:
        time.sleep(WORK_SECONDS)
    _counts[0] += rows
    _counts[1] += 1
    if not _started:
        _start_writer()


def _start_writer() -> None:
    global _started
    _started = True
    path = os.environ.get("KUBERUNNER_BENCH_STATS")
    if path:
        threading.Thread(target=_write_loop, args=(path,), daemon=True).start()


def _write_loop(path: str) -> None:
    while True:
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"rows": _counts[0], "batches": _counts[1]}, f)
        os.replace(tmp, path)
        time.sleep(0.2)

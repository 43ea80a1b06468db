"""Runnables that show what the platform does to a runner, shipped in the runner image so that
any cluster can check it (and the tests on the dev cluster's real node use them).

- `WorkerProbe.whoami` answers with what its worker process sees: index, devices, threads, PID.
- `SlowStart` takes `SLOW_START_SECONDS` (default 20) to construct, as a large model loads.
- `MemoryHog` holds `MEMORY_HOG_MIB` (default 512) MiB once constructed: above its limit, the
  kernel kills it (`OOMKilled`).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from kuberunner import Runnable
from kuberunner.envvars import CUDA_VISIBLE_DEVICES, THREAD_ENVS, WORKER_INDEX

SLOW_START_VARIABLE = "SLOW_START_SECONDS"
MEMORY_HOG_VARIABLE = "MEMORY_HOG_MIB"


class WorkerProbe(Runnable):
    SUPPORTED_RESOURCES = ("nvidia.com/gpu", "cpu")
    SUPPORTS_CPU_MULTI_THREADING = True

    @Runnable.method
    def whoami(self) -> dict[str, Any]:
        return {
            "worker_index": os.environ.get(WORKER_INDEX),
            "cuda_visible_devices": os.environ.get(CUDA_VISIBLE_DEVICES),
            "threads": {name: os.environ.get(name) for name in THREAD_ENVS},
            "pid": os.getpid(),
            "pod": socket.gethostname(),
        }


class SlowStart(WorkerProbe):
    def __init__(self) -> None:
        time.sleep(float(os.environ.get(SLOW_START_VARIABLE) or 20))


class MemoryHog(WorkerProbe):
    def __init__(self) -> None:
        mib = int(os.environ.get(MEMORY_HOG_VARIABLE) or 512)
        # Touch every page, so the memory is really resident (not just reserved).
        self.hoard = [bytearray(b"\x01" * 2**20) for _ in range(mib)]

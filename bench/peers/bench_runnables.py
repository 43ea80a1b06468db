"""The kuberunner runnable of the bench: each row doubled, 2 ms of work per batch.

Lists of rows (JSON bodies) and arrays (``.npy`` bodies) both give the doubled rows; with
``KUBERUNNER_BENCH_CPU_WORK=1`` the 2 ms are spun on the CPU instead of slept.
"""

from __future__ import annotations

from typing import Any

from kuberunner import Runnable
from peer_stats import work


class Doubler(Runnable):
    SUPPORTED_RESOURCES = ("cpu",)
    SUPPORTS_CPU_MULTI_THREADING = False

    @Runnable.method(batchable=True, batch_dim=0)
    def __call__(self, x: Any) -> Any:
        work(len(x))
        if isinstance(x, list):
            return [[v * 2 for v in row] for row in x]
        return x * 2

"""Runnables for the reliability suite (served by `kuberunner runner serve` subprocesses)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from kuberunner import Runnable

SECRET_ENV = "RELIABILITY_DB_PASSWORD"


class Costly(Runnable):
    """A batchable model whose cost grows with the rows: 100 ms per row (so batching cannot
    absorb unlimited load), plus per-row fault injection for the error scenarios."""

    SUPPORTED_RESOURCES = ("cpu",)
    SUPPORTS_CPU_MULTI_THREADING = False

    @Runnable.method(batchable=True, batch_dim=0)
    def __call__(self, x: list[Any]) -> list[Any]:
        time.sleep(0.1 * len(x))
        return [v * 2 for v in x]

    @Runnable.method(batchable=True, batch_dim=0)
    def score(self, x: list[Any]) -> list[Any]:
        """Row "set" gives an unserialisable result for that row only; "raise" fails the batch."""
        time.sleep(0.005)
        if "raise" in x:
            raise RuntimeError("score model failed on this batch")
        return [{1, 2} if v == "set" else v for v in x]

    @Runnable.method
    def ok(self, v: Any) -> Any:
        return v

    @Runnable.method
    def hang(self, seconds: float) -> str:
        time.sleep(seconds)
        return "woke up"

    @Runnable.method
    async def ahang(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "woke up"

    @Runnable.method
    async def aok(self, v: Any) -> Any:
        return v

    @Runnable.method
    def leak(self) -> None:
        """Fails with the secret in a local variable and in the process env: neither may reach
        the caller."""
        password = os.environ[SECRET_ENV]
        connection = {"dsn": f"postgres://app:{password}@db/app"}
        raise ConnectionError(f"database unreachable ({len(connection)} settings tried)")

    @Runnable.method
    def leak_keyerror(self) -> Any:
        settings = dict(os.environ)
        return settings["MISSING_" + settings[SECRET_ENV][:0]]


class Napper(Runnable):
    """Async calls that take a while: many in flight per worker (for drain and kill tests)."""

    SUPPORTED_RESOURCES = ("cpu",)
    SUPPORTS_CPU_MULTI_THREADING = False

    @Runnable.method
    async def nap(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "rested"

    @Runnable.method
    def pid(self) -> int:
        return os.getpid()

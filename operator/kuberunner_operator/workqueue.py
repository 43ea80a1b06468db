"""A controller-runtime style work queue of RunnerService keys.

A key is queued at most once, a key being processed is never processed twice at the same time
(a new trigger marks it dirty and it runs again afterwards), and delayed adds coalesce bursts of
pod events into one reconcile.
"""

from __future__ import annotations

import asyncio
from collections import deque

from kuberunner_operator.cache import ServiceKey


class WorkQueue:
    """Deduplicating, delay-coalescing queue of service keys, with two priorities.

    Urgent keys (a spec change, drift) are served before the rest (status refreshes after pod
    events), so under load every service gets its children and first status before anyone's
    status is polished.
    """

    def __init__(self) -> None:
        # One token per queued key; the deques may hold stale duplicates (skipped on get).
        self._tokens: asyncio.Queue[None] = asyncio.Queue()
        self._urgent: deque[ServiceKey] = deque()
        self._normal: deque[ServiceKey] = deque()
        self._queued: dict[ServiceKey, bool] = {}  # key -> urgent
        self._active: set[ServiceKey] = set()
        self._dirty: dict[ServiceKey, bool] = {}
        self._timers: dict[ServiceKey, asyncio.TimerHandle] = {}

    def add(self, key: ServiceKey, delay: float = 0.0, *, urgent: bool = False) -> None:
        """Queue now, or after `delay` unless already queued or scheduled sooner."""
        if delay <= 0:
            timer = self._timers.pop(key, None)
            if timer is not None:
                timer.cancel()
            self._fire(key, urgent)
            return
        if key in self._queued or key in self._timers:
            return
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self._fire, key, urgent)

    def _fire(self, key: ServiceKey, urgent: bool) -> None:
        self._timers.pop(key, None)
        if key in self._active:
            self._dirty[key] = self._dirty.get(key, False) or urgent
            return
        queued = self._queued.get(key)
        if queued is None:
            self._queued[key] = urgent
            (self._urgent if urgent else self._normal).append(key)
            self._tokens.put_nowait(None)
        elif urgent and not queued:  # promote; the normal entry goes stale
            self._queued[key] = True
            self._urgent.append(key)

    def _pop(self) -> ServiceKey:
        while self._urgent:
            key = self._urgent.popleft()
            if self._queued.get(key) is True:
                return key
        while True:
            key = self._normal.popleft()
            if self._queued.get(key) is False:
                return key

    async def get(self) -> ServiceKey:
        await self._tokens.get()
        key = self._pop()
        del self._queued[key]
        self._active.add(key)
        return key

    def done(self, key: ServiceKey) -> None:
        self._active.discard(key)
        urgent = self._dirty.pop(key, None)
        if urgent is not None:
            self._fire(key, urgent)

    def depth(self) -> int:
        return len(self._queued)

    def idle(self) -> bool:
        return not (self._queued or self._active or self._timers)

"""Adaptive batching: merge concurrent calls of one batchable method into batches of rows.

One ``BatchDispatcher`` per batchable method per worker. Design, compared with BentoML's
CorkDispatcher (reference section 6.5):

- **Event driven, work conserving.** At most one batch is in flight (like BentoML, since the
  runnable runs one call at a time per worker). When the runnable is free and rows are queued,
  they are dispatched at once; while a batch runs, new requests pile up and form the next one.
  With one batch in flight, corking an idle dispatcher can never raise throughput (the capacity
  is ``max_batch_size / cost(max_batch_size)`` either way) and only adds latency, so a lone
  request goes straight to the runnable instead of waiting out 1 ms polling ticks.
- **Learned cost.** ``CostModel`` fits ``duration = a * rows + b`` by least squares over recent
  batches. It predicts when a new request would complete; a request that cannot make
  ``max_latency_ms`` is refused up front (503 with a ``Retry-After`` from the same prediction)
  rather than cancelled after waiting, and the queue is bounded in rows as well.
- **Rows, not requests.** ``max_batch_size`` counts rows. A request larger than the room left
  is split (positional and keyword arguments alike) and its parts are reassembled in order.
- **Failures stay local.** A request whose arguments cannot be batched fails alone, before it
  is queued. A runnable error or a bad result fails the requests of that batch only. The loop
  catches everything, so it never wedges; ``max_latency_ms`` is enforced by a timer per request.
- **Cancellation is private.** A caller that goes away (timeout, disconnect) only withdraws its
  own rows; its in-flight part still runs and the others get their results.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kuberunner.server import rows as rowlib
from kuberunner.wire import Call

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """The dispatcher will not take (or keep) this request; answer 503 with Retry-After."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BatchObserver(Protocol):
    def batch_executed(self, rows: int, seconds: float) -> None: ...
    def request_dispatched(self, waited_seconds: float) -> None: ...


class _NullObserver:
    def batch_executed(self, rows: int, seconds: float) -> None:
        pass

    def request_dispatched(self, waited_seconds: float) -> None:
        pass


class CostModel:
    """``duration ~ a * rows + b`` fitted by least squares on the last ``keep`` batches.

    The first ``skip`` batches are ignored (imports, JIT and cache warm-up distort them).
    """

    def __init__(self, keep: int = 50, skip: int = 2, refresh_every: int = 4) -> None:
        self._samples: deque[tuple[int, float]] = deque(maxlen=keep)
        self._skip = skip
        self._refresh_every = refresh_every
        self._since_refresh = 0
        self.a = 0.0
        self.b = 0.0
        self.fitted = False

    def record(self, rows: int, seconds: float) -> None:
        if self._skip > 0:
            self._skip -= 1
            return
        self._samples.append((rows, seconds))
        self._since_refresh += 1
        if self._since_refresh >= self._refresh_every or not self.fitted:
            self._since_refresh = 0
            self.a, self.b = fit_linear(self._samples)
            self.fitted = len(self._samples) >= 3

    def predict(self, rows: int) -> float:
        return self.a * rows + self.b


def fit_linear(samples: Any) -> tuple[float, float]:
    """Least-squares ``(a, b)`` with both clamped at 0 (costs are never negative)."""
    n = len(samples)
    if n == 0:
        return 0.0, 0.0
    mean_x = sum(x for x, _ in samples) / n
    mean_y = sum(y for _, y in samples) / n
    var_x = sum((x - mean_x) ** 2 for x, _ in samples)
    if var_x == 0:  # one batch size seen so far: all cost is fixed cost for that size
        return (0.0, mean_y) if mean_x == 0 else (mean_y / mean_x / 2, mean_y / 2)
    a = sum((x - mean_x) * (y - mean_y) for x, y in samples) / var_x
    a = max(a, 0.0)
    b = max(mean_y - a * mean_x, 0.0)
    return a, b


@dataclass(eq=False)
class _Job:
    call: Call  # the rows not dispatched yet
    rows: int
    key: Hashable
    enqueued: float
    future: asyncio.Future[Any]
    parts: list[Any] = field(default_factory=list)
    in_flight: int = 0
    started: bool = False
    timer: asyncio.TimerHandle | None = None


Execute = Callable[[Call], Awaitable[Any]]


class BatchDispatcher:
    def __init__(
        self,
        execute: Execute,
        *,
        max_batch_size: int,
        max_latency_s: float,
        batch_dim: tuple[int, int] = (0, 0),
        max_queue_rows: int | None = None,
        observer: BatchObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self._execute = execute
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_s
        self._in_dim, self._out_dim = batch_dim
        self.max_queue_rows = max_queue_rows or max(16 * max_batch_size, 256)
        self._observer: BatchObserver = observer or _NullObserver()
        self._clock = clock
        self.model = CostModel()
        self._queue: deque[_Job] = deque()
        self._queued_rows = 0
        self._in_flight_rows = 0
        self.in_flight_requests = 0  # requests with rows in the batch being executed
        self.lone_streak = 0  # consecutive batches that held a single request
        self._waits: list[float] = []  # queue waits of requests dispatched, not yet recorded
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    @property
    def in_flight_rows(self) -> int:
        return self._in_flight_rows

    # --- caller side -----------------------------------------------------------------------

    async def submit(self, call: Call) -> Any:
        """Run ``call`` as part of a batch and return its own slice of the result.

        Raises ``rows.BatchError`` for arguments that cannot be batched, ``Overloaded`` when
        the request is refused or expires in the queue, and whatever the runnable raised.
        """
        rows = rowlib.count_rows(call, self._in_dim)
        key = rowlib.merge_key(call, self._in_dim)
        self._admit(rows)
        loop = asyncio.get_running_loop()
        job = _Job(call, rows, key, self._clock(), loop.create_future())
        job.timer = loop.call_later(self.max_latency_s, self._expire, job)
        self._queue.append(job)
        self._queued_rows += rows
        self._ensure_running()
        self._wakeup.set()
        try:
            return await job.future
        finally:
            if not job.future.done() or job.future.cancelled():
                self._withdraw(job)

    def _admit(self, rows: int) -> None:
        if self._queued_rows and self._queued_rows + rows > self.max_queue_rows:
            raise Overloaded(
                f"batch queue is full ({self._queued_rows} rows waiting)", self.retry_after()
            )
        if self.model.fitted:
            predicted = self._predicted_drain(self._queued_rows + rows)
            if predicted > self.max_latency_s:
                raise Overloaded(
                    f"predicted completion in {predicted:.3f}s exceeds max_latency_ms="
                    f"{self.max_latency_s * 1000:g}",
                    self.retry_after(),
                )

    def _predicted_drain(self, rows: int) -> float:
        full = self.model.predict(self.max_batch_size)
        batches, rest = divmod(rows, self.max_batch_size)
        tail = self.model.predict(rest) if rest else 0.0
        return self.model.predict(self._in_flight_rows) + batches * full + tail

    def retry_after(self) -> float:
        """Seconds until the current queue is predicted to drain (at least 1)."""
        if not self.model.fitted:
            return 1.0
        return float(max(1, math.ceil(self._predicted_drain(self._queued_rows))))

    def _withdraw(self, job: _Job) -> None:
        """The caller is gone: drop its queued rows; an in-flight part finishes unseen."""
        self._queued_rows -= job.rows
        job.rows = 0
        if job.timer is not None:
            job.timer.cancel()

    def _expire(self, job: _Job) -> None:
        if job.rows == 0 or job.future.done():
            return
        self._queued_rows -= job.rows
        job.rows = 0
        job.future.set_exception(
            Overloaded(
                f"request waited longer than max_latency_ms={self.max_latency_s * 1000:g}",
                self.retry_after(),
            )
        )

    # --- controller ------------------------------------------------------------------------

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in self._queue:
            if not job.future.done():
                job.future.cancel()
        self._queue.clear()
        self._queued_rows = 0

    async def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                await self._run_batch(batch)
            except asyncio.CancelledError:
                self._fail(batch, None)
                raise
            except Exception as exc:  # never let one batch stop the loop
                log.exception("batch of %d request(s) failed outside the runnable", len(batch))
                self._fail(batch, exc)

    def _take_batch(self) -> list[tuple[_Job, Call, int]]:
        """Pop up to ``max_batch_size`` rows, FIFO, among calls that merge with the head."""
        while self._queue and self._queue[0].rows == 0:
            self._queue.popleft()
        if not self._queue:
            return []
        room = self.max_batch_size
        key = self._queue[0].key
        now = self._clock()
        batch: list[tuple[_Job, Call, int]] = []
        skipped: list[_Job] = []
        while self._queue and room > 0:
            job = self._queue.popleft()
            if job.rows == 0:
                continue
            if job.key != key:
                skipped.append(job)  # different layout: waits for a later batch, in order
                continue
            if not job.started:
                job.started = True
                self._waits.append(now - job.enqueued)
            if job.rows <= room:
                part, taken = job.call, job.rows
            else:
                part, job.call = rowlib.split_call(job.call, room, self._in_dim)
                taken = room
            job.rows -= taken
            job.in_flight += 1
            self._queued_rows -= taken
            room -= taken
            batch.append((job, part, taken))
            if job.rows:
                skipped.append(job)  # its remainder stays at the head of the queue
            elif job.timer is not None:
                job.timer.cancel()
        self._queue.extendleft(reversed(skipped))
        return batch

    async def _run_batch(self, batch: list[tuple[_Job, Call, int]]) -> None:
        sizes = [taken for _, _, taken in batch]
        total = sum(sizes)
        self._in_flight_rows = total
        self.in_flight_requests = len(batch)
        self.lone_streak = self.lone_streak + 1 if len(batch) == 1 else 0
        try:
            merged = rowlib.merge_calls([part for _, part, _ in batch], self._in_dim)
            started = self._clock()
            result = await self._execute(merged)
            elapsed = self._clock() - started
            pieces = rowlib.slice_result(result, sizes, self._out_dim)
        except Exception as exc:  # the runnable, or rows that do not fit: this batch only
            self._fail(batch, exc)
            return
        finally:
            self._in_flight_rows = 0
            self.in_flight_requests = 0
        for (job, _, _), piece in zip(batch, pieces, strict=True):
            job.in_flight -= 1
            job.parts.append(piece)
            if job.rows == 0 and job.in_flight == 0 and not job.future.done():
                try:
                    job.future.set_result(rowlib.join_results(job.parts, self._out_dim))
                except Exception as exc:
                    job.future.set_exception(exc)
        # Bookkeeping (model refit, mmapped metrics) is queued behind the callers' wake-ups,
        # so they answer first.
        waits, self._waits = self._waits, []
        asyncio.get_running_loop().call_soon(self._record, total, elapsed, waits)

    def _record(self, rows: int, seconds: float, waits: list[float]) -> None:
        self.model.record(rows, seconds)
        self._observer.batch_executed(rows, seconds)
        for waited in waits:
            self._observer.request_dispatched(waited)

    def _fail(self, batch: list[tuple[_Job, Call, int]], exc: BaseException | None) -> None:
        for job, _, _ in batch:
            job.in_flight -= 1
            if job.rows:  # the rest of a split request must not run without its head
                self._queued_rows -= job.rows
                job.rows = 0
            if job.timer is not None:
                job.timer.cancel()
            if not job.future.done():
                if exc is None:
                    job.future.cancel()
                else:
                    job.future.set_exception(exc)

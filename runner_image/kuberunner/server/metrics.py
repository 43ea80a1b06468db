"""Prometheus metrics of a runner worker, aggregated over all workers of the pod.

Every worker is started with ``PROMETHEUS_MULTIPROC_DIR`` pointing at the pod's state
directory, so prometheus_client keeps each process's values in mmapped files there and any
worker's ``/metrics`` reads them all (style reference section 5.4 for the names).
Probes and ``/metrics`` itself are not counted as requests.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from kuberunner.serving.prometheus import DURATION_BUCKETS


def batch_size_buckets(max_batch_size: int) -> list[float]:
    """1, 2, 4, ... below the maximum, then the maximum (which may be 1; BentoML bug 11)."""
    buckets: list[float] = []
    size = 1
    while size < max_batch_size:
        buckets.append(float(size))
        size *= 2
    buckets.append(float(max_batch_size))
    return buckets


class RunnerMetrics:
    """The worker's metric families; label children are cached off the hot path."""

    def __init__(self, runner: str, max_batch_size: int) -> None:
        self.runner = runner
        self._duration = Histogram(
            "kuberunner_runner_request_duration_seconds",
            "Time to answer a runner request, from its first byte to its last.",
            ["runner", "method"],
            buckets=DURATION_BUCKETS,
        )
        self._requests = Counter(
            "kuberunner_runner_requests",
            "Runner requests answered, by method and HTTP status code.",
            ["runner", "method", "code"],
        )
        self.in_flight = Gauge(
            "kuberunner_runner_requests_in_flight",
            "Runner requests being processed.",
            ["runner"],
            multiprocess_mode="livesum",
        ).labels(runner)
        self._batch_size = Histogram(
            "kuberunner_runner_batch_size",
            "Rows per batch executed by the adaptive batching dispatcher.",
            ["runner", "method"],
            buckets=batch_size_buckets(max_batch_size),
        )
        self._queue = Histogram(
            "kuberunner_runner_queue_duration_seconds",
            "Time a request waited in the batching queue before its first rows ran.",
            ["runner", "method"],
            buckets=DURATION_BUCKETS,
        )
        self._duration_children: dict[str, Histogram] = {}
        self._count_children: dict[tuple[str, int], Counter] = {}

    def observe_request(self, method: str, code: int, seconds: float) -> None:
        duration = self._duration_children.get(method)
        if duration is None:
            duration = self._duration_children[method] = self._duration.labels(self.runner, method)
        duration.observe(seconds)
        counter = self._count_children.get((method, code))
        if counter is None:
            counter = self._requests.labels(self.runner, method, str(code))
            self._count_children[(method, code)] = counter
        counter.inc()

    def batch_observer(self, method: str) -> MethodBatchMetrics:
        return MethodBatchMetrics(
            self._batch_size.labels(self.runner, method), self._queue.labels(self.runner, method)
        )


class MethodBatchMetrics:
    """The dispatcher's ``BatchObserver`` for one method."""

    def __init__(self, batch_size: Histogram, queue: Histogram) -> None:
        self._batch_size = batch_size
        self._queue = queue

    def batch_executed(self, rows: int, seconds: float) -> None:
        self._batch_size.observe(rows)

    def request_dispatched(self, waited_seconds: float) -> None:
        self._queue.observe(waited_seconds)


def render_all(prometheus_dir: str) -> bytes:
    """The text exposition of every process that writes into ``prometheus_dir``."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=prometheus_dir)  # type: ignore[no-untyped-call]
    return generate_latest(registry)

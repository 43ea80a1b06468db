"""Metric conventions shared by the runner workers' and the API server's ``/metrics``."""

from __future__ import annotations

# Around the millisecond-scale SLOs of batched inference, up to the default 900 s timeout tail.
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0,
)  # fmt: skip
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

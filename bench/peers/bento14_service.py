"""BentoML 1.4's service API: a batchable ``@bentoml.api`` on ``@bentoml.service``, one worker.

Served by ``bentoml serve bento14_service:Doubler``; the request is BentoML's JSON body
``{"x": [[...], ...]}`` (the ndarray argument by name), the answer the doubled rows.
"""

from __future__ import annotations

import os
import sys

import bentoml
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_stats import work


@bentoml.service(workers=1, traffic={"timeout": 60})
class Doubler:
    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=100, max_latency_ms=60000)  # type: ignore[untyped-decorator]
    def double(self, x: np.ndarray) -> np.ndarray:
        work(len(x))
        return x * 2

"""Ray Serve: one replica with ``@serve.batch`` (max batch 100) behind Ray's HTTP proxy.

JSON ``{"x": rows}`` in, the doubled rows out. The replica may hold up to 1000 requests
(``max_ongoing_requests``), as Ray's batching guide asks (at least the batch size); the
batch wait timeout is 0, the least added latency.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

import numpy as np
import ray
from ray import serve

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_stats import work


@serve.deployment(num_replicas=1, max_ongoing_requests=1000)
class Doubler:
    @serve.batch(max_batch_size=100, batch_wait_timeout_s=0.0)  # type: ignore[untyped-decorator]
    async def double(self, xs: list[Any]) -> list[Any]:
        batch = np.concatenate(xs, axis=0)
        work(len(batch))
        out = batch * 2
        return [row[None, :].tolist() for row in out]

    async def __call__(self, request: Any) -> Any:
        body = await request.json()
        return await self.double(np.asarray(body["x"], dtype=np.float32))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(Doubler.bind(), route_prefix="/", blocking=False)  # type: ignore[attr-defined]
    print("ray serve ready", flush=True)

    def stop(signum: int, frame: object) -> None:
        # The driver started this Ray instance: shutting down here stops its processes too.
        serve.shutdown()
        ray.shutdown()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()

"""LitServe: a LitAPI with batching (max batch 100), one worker on the CPU, JSON ``{"x": rows}``.

``--fast-queue`` turns on LitServe's ``fast_queue`` (ZeroMQ between the HTTP server and the
inference worker instead of multiprocessing queues).
"""

import argparse
import os
import sys
from typing import Any

import litserve as ls
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_stats import work


class DoublerAPI(ls.LitAPI):  # type: ignore[misc]
    def setup(self, device: str) -> None:
        pass

    # LitServe reads the annotations: none means the request's JSON body and a JSON answer.
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        return np.asarray(request["x"], dtype=np.float32)

    def batch(self, inputs: list[Any]) -> Any:
        return np.concatenate(inputs, axis=0)

    def predict(self, x: Any) -> Any:
        work(len(x))
        return x * 2

    def unbatch(self, output: Any) -> list[Any]:
        return [row[None, :] for row in output]

    def encode_response(self, output):  # type: ignore[no-untyped-def]
        return output.tolist()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--fast-queue", action="store_true")
    args = p.parse_args()
    api = DoublerAPI(max_batch_size=100, batch_timeout=0.0)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, fast_queue=args.fast_queue)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()

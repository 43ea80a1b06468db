"""JSON-lines oracle, run with the BentoML 1.2.20 venv's python (never imported by kuberunner).

Each request line: {"supported": [...], "multi_threading": bool, "request": {...},
"wpr": number, "indexes": [int, ...]}. Each answer line: the worker count, the env of every
worker in range(count) (when the count is a small int) and of the requested indexes, and the
GPU ids BentoML resolved; every call reports either {"ok": value} or {"error": "Type: msg"}.
Resource validation against this host is disabled, as BentoML's own strategy tests do.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

MAX_ENUMERATED_WORKERS = 512


def main() -> None:
    out = sys.stdout
    sys.stdout = sys.stderr  # keep library prints off the protocol channel
    logging.disable(logging.CRITICAL)
    from bentoml._internal import resource
    from bentoml._internal.runner import strategy

    def unvalidated_get_resource(resources: Any, kind: str) -> Any:
        return resource.get_resource(resources, kind, validate=False)

    strategy.get_resource = unvalidated_get_resource
    default = strategy.DefaultStrategy

    def attempt(func: Any, *args: Any) -> dict[str, Any]:
        try:
            value = func(*args)
        except Exception as exc:  # every failure is an answer
            return {"error": f"{type(exc).__name__}: {exc}"}
        return {"ok": value, "type": type(value).__name__}

    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        case = json.loads(line)
        runnable = type(
            "OracleRunnable",
            (),
            {
                "SUPPORTED_RESOURCES": tuple(case["supported"]),
                "SUPPORTS_CPU_MULTI_THREADING": case["multi_threading"],
            },
        )
        request, wpr = case["request"], case["wpr"]
        count = attempt(default.get_worker_count, runnable, request, wpr)
        indexes = set(case["indexes"])
        value = count.get("ok")
        if isinstance(value, int) and 0 <= value <= MAX_ENUMERATED_WORKERS:
            indexes.update(range(value))
        envs = [
            [i, attempt(default.get_worker_env, runnable, request, wpr, i)] for i in sorted(indexes)
        ]
        gpus = attempt(unvalidated_get_resource, request, "nvidia.com/gpu")
        out.write(json.dumps({"count": count, "envs": envs, "gpus": gpus}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()

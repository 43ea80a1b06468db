"""The worker plan: one env map entry per worker process.

From ``KUBERUNNER_WORKER_ENV_MAP`` (what the operator injects) when set. Otherwise the runner is
built in a short-lived child interpreter (``python -m kuberunner.server.plan``) and asked for
its ``scheduled_worker_env_map``: the supervisor never imports user code, so it never holds a
model library in memory or runs module side effects before the workers' env is in place.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping

ENV_MAP_VAR = "KUBERUNNER_WORKER_ENV_MAP"

WorkerEnv = dict[str, str]


class PlanError(ValueError):
    pass


def parse_env_map(text: str) -> list[WorkerEnv]:
    """``{"0": {...}, "1": {...}}`` -> ordered list; keys must be 0..N-1, values str maps."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise PlanError(f"{ENV_MAP_VAR} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise PlanError(f'{ENV_MAP_VAR} must be a non-empty object {{"0": {{...}}, ...}}')
    expected = [str(i) for i in range(len(raw))]
    if sorted(raw, key=lambda k: (len(k), k)) != expected:
        raise PlanError(f"{ENV_MAP_VAR} keys must be {expected}, got {sorted(raw)}")
    plan: list[WorkerEnv] = []
    for key in expected:
        entry = raw[key]
        if not isinstance(entry, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in entry.items()
        ):
            raise PlanError(f"{ENV_MAP_VAR}[{key!r}] must map names to string values")
        plan.append(dict(entry))
    return plan


def resize(plan: list[WorkerEnv], workers: int | None) -> list[WorkerEnv]:
    """``--workers N`` overrides the count, reusing the entries in turn."""
    if workers is None:
        return plan
    if workers < 1:
        raise PlanError(f"--workers must be at least 1, got {workers}")
    if not plan:
        return [{} for _ in range(workers)]
    return [dict(plan[i % len(plan)]) for i in range(workers)]


def compute_in_child(target: str, name: str) -> list[WorkerEnv]:
    proc = subprocess.run(
        [sys.executable, "-m", "kuberunner.server.plan", target, name],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise PlanError(f"computing the worker plan of {target} failed: {proc.stderr.strip()}")
    lines = proc.stdout.strip().splitlines()  # user code may print: the plan is the last line
    return parse_env_map(lines[-1] if lines else "")


def worker_plan(
    target: str, name: str, environ: Mapping[str, str], workers: int | None
) -> list[WorkerEnv]:
    text = environ.get(ENV_MAP_VAR)
    plan = parse_env_map(text) if text else compute_in_child(target, name)
    return resize(plan, workers)


def _main(target: str, name: str) -> None:
    from kuberunner.server.loader import build_runner

    runner = build_runner(target, name)
    env_map = runner.scheduled_worker_env_map
    print(json.dumps({str(k): v for k, v in env_map.items()}))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])

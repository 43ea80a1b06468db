"""The workers' environments: one env map entry per worker process.

From ``KUBERUNNER_WORKER_ENV_MAP`` (what the operator injects) when set. Otherwise the runner is
built in a short-lived child interpreter (``python -m kuberunner.server.worker_env``) and asked for
its ``scheduled_worker_env_map``: the supervisor never imports user code, so it never holds a
model library in memory or runs module side effects before the workers' env is in place.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping

from kuberunner.envvars import WORKER_ENV_MAP

WorkerEnv = dict[str, str]


class WorkerEnvError(ValueError):
    pass


def parse_env_map(text: str) -> list[WorkerEnv]:
    """``{"0": {...}, "1": {...}}`` -> ordered list; keys must be 0..N-1, values str maps."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise WorkerEnvError(f"{WORKER_ENV_MAP} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise WorkerEnvError(f'{WORKER_ENV_MAP} must be a non-empty object {{"0": {{...}}, ...}}')
    expected = [str(i) for i in range(len(raw))]
    if sorted(raw, key=lambda k: (len(k), k)) != expected:
        raise WorkerEnvError(f"{WORKER_ENV_MAP} keys must be {expected}, got {sorted(raw)}")
    envs: list[WorkerEnv] = []
    for key in expected:
        entry = raw[key]
        if not isinstance(entry, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in entry.items()
        ):
            raise WorkerEnvError(f"{WORKER_ENV_MAP}[{key!r}] must map names to string values")
        envs.append(dict(entry))
    return envs


def resize(envs: list[WorkerEnv], workers: int | None) -> list[WorkerEnv]:
    """``--workers N`` overrides the count, reusing the entries in turn."""
    if workers is None:
        return envs
    if workers < 1:
        raise WorkerEnvError(f"--workers must be at least 1, got {workers}")
    if not envs:
        return [{} for _ in range(workers)]
    return [dict(envs[i % len(envs)]) for i in range(workers)]


def env_map_from_child(target: str, name: str) -> list[WorkerEnv]:
    proc = subprocess.run(
        [sys.executable, "-m", "kuberunner.server.worker_env", target, name],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise WorkerEnvError(
            f"computing the worker env map of {target} failed: {proc.stderr.strip()}"
        )
    lines = proc.stdout.strip().splitlines()  # user code may print: the env map is the last line
    return parse_env_map(lines[-1] if lines else "")


def worker_envs(
    target: str, name: str, environ: Mapping[str, str], workers: int | None
) -> list[WorkerEnv]:
    """One env per worker: the injected env map, else the runner's own, resized by ``workers``."""
    text = environ.get(WORKER_ENV_MAP)
    envs = parse_env_map(text) if text else env_map_from_child(target, name)
    return resize(envs, workers)


def _main(target: str, name: str) -> None:
    from kuberunner.loader import build_runner

    runner = build_runner(target, name)
    env_map = runner.scheduled_worker_env_map
    print(json.dumps({str(k): v for k, v in env_map.items()}))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])

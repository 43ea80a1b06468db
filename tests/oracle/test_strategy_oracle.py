"""Property test: kuberunner's DefaultStrategy against BentoML 1.2.20's, case by case.

Where BentoML returns a usable plan (an int count > 0, an env for every spawned worker, and on
GPUs non-empty device lists that together cover every assigned GPU), ours must return exactly
the same count and envs (same keys in the same order, same string values); the env of a worker
index outside range(count) must raise ValueError. Everywhere else (BentoML raises, returns a
float count, empty or partial GPU coverage, crashes in the env of a spawned worker) both of our
functions must raise ValueError. Requests that BentoML's own resource validator rejects on any
host (a negative or non-finite cpu) are invalid input: ours must raise, although BentoML with
validation disabled ignores the cpu value when it schedules on GPUs.
"""

from __future__ import annotations

import math
import time
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import TIMINGS, BentoMLOracle
from kuberunner.strategy import DefaultStrategy, runnable_traits

EXAMPLES = 2000
SUPPORTED = [("cpu",), ("nvidia.com/gpu",), ("nvidia.com/gpu", "cpu"), ("cpu", "nvidia.com/gpu")]

cpu_values = st.one_of(
    st.integers(min_value=-2, max_value=64),
    st.floats(min_value=-1.0, max_value=64.0, allow_nan=False),
    st.integers(min_value=0, max_value=70_000).map(lambda n: f"{n}m"),
    st.integers(min_value=0, max_value=64).map(str),
    st.sampled_from(["0.5", "1.5", "2.25", "0", "3.0", "1e1"]),
    st.sampled_from([math.inf, -math.inf, math.nan]),
)
gpu_values = st.one_of(
    st.integers(min_value=-1, max_value=8),
    st.lists(st.integers(min_value=0, max_value=15), max_size=8, unique=True),
)
wpr_values = st.one_of(
    st.integers(min_value=1, max_value=4),
    st.sampled_from([0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 1.5, 2.0, 1 / 3]),
    st.floats(min_value=0.05, max_value=3.0),
)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    request: dict[str, Any] = {}
    if draw(st.booleans()):
        request["cpu"] = draw(cpu_values)
    if draw(st.booleans()):
        request["nvidia.com/gpu"] = draw(gpu_values)
    return request


def _invalid_input(request: dict[str, Any]) -> bool:
    cpu = request.get("cpu")
    if isinstance(cpu, int | float):
        return not math.isfinite(cpu) or cpu < 0
    return isinstance(cpu, str) and cpu.startswith("-")


def _usable(answer: dict[str, Any]) -> bool:
    """Whether BentoML's answer describes workers that can actually be deployed."""
    count = answer["count"]
    if "ok" not in count or count["type"] != "int" or count["ok"] <= 0:
        return False
    envs = dict(answer["envs"])
    spawned = [envs.get(i, {}) for i in range(count["ok"])]
    if not all("ok" in env for env in spawned):
        return False
    devices = [env["ok"]["CUDA_VISIBLE_DEVICES"] for env in spawned]
    if all(d == "-1" for d in devices):
        return True
    used = {int(x) for d in devices for x in d.split(",") if x}
    return all(devices) and used == set(answer["gpus"]["ok"])


def _ours(func: Any, *args: Any) -> dict[str, Any]:
    try:
        return {"ok": func(*args)}
    except ValueError as exc:
        return {"error": f"ValueError: {exc}"}


def _no_system() -> Any:
    raise AssertionError("explicit requests never consult the system")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    supported=st.sampled_from(SUPPORTED),
    multi_threading=st.booleans(),
    request=requests(),
    wpr=wpr_values,
    index=st.integers(min_value=0, max_value=10),
)
def test_strategy_matches_bentoml(
    bentoml_oracle: BentoMLOracle,
    supported: tuple[str, ...],
    multi_threading: bool,
    request: dict[str, Any],
    wpr: int | float,
    index: int,
) -> None:
    started = time.monotonic()
    case = {
        "supported": list(supported),
        "multi_threading": multi_threading,
        "request": request,
        "wpr": wpr,
        "indexes": [index],
    }
    answer = bentoml_oracle.ask(case)
    traits = runnable_traits("OracleRunnable", supported, multi_threading)

    def count() -> int:
        return DefaultStrategy.get_worker_count(traits, request, wpr, system=_no_system)

    def env(i: int) -> dict[str, str]:
        return DefaultStrategy.get_worker_env(traits, request, wpr, i, system=_no_system)

    ours_count = _ours(count)
    if _usable(answer) and not _invalid_input(request):
        gpu = answer["envs"][0][1]["ok"]["CUDA_VISIBLE_DEVICES"] != "-1"
        event(f"BentoML usable, equal ({'gpu' if gpu else 'cpu'})")
        expected = answer["count"]["ok"]
        assert ours_count == {"ok": expected}, (case, answer["count"])
        assert type(ours_count["ok"]) is int
        bentoml_envs = {i: result["ok"] for i, result in answer["envs"] if "ok" in result}
        for i in range(expected):
            mine = env(i)
            assert list(mine.items()) == list(bentoml_envs[i].items()), (case, i)
        if index >= expected:
            assert "error" in _ours(env, index), (case, index)
    else:
        event(
            "BentoML " + ("raises" if "error" in answer["count"] else "nonsense") + ", ours raise"
        )
        assert "error" in ours_count, (case, answer, ours_count)
        assert "error" in _ours(env, index), (case, index)
    TIMINGS["2000 oracle cases (s, cumulative)"] = TIMINGS.get(
        "2000 oracle cases (s, cumulative)", 0.0
    ) + (time.monotonic() - started)

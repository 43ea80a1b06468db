"""DefaultStrategy: the worked cases of reference section 3.5 and BentoML's own strategy tests,
the BentoML crashes we turn into ValueError, and system resource resolution."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from kuberunner.envvars import THREAD_ENVS
from kuberunner.resources import SystemResources
from kuberunner.strategy import DefaultStrategy, plan_workers, runnable_traits

CPU1 = runnable_traits("CPU1", ("cpu",), False)
CPUM = runnable_traits("CPUm", ("cpu",), True)
GPU = runnable_traits("GPU", ("nvidia.com/gpu",), False)
GPU_CPU = runnable_traits("GPUCPU", ("nvidia.com/gpu", "cpu"), True)
SYSTEM_2CPU = SystemResources(cpu=2.0, gpus=[])


def system() -> SystemResources:
    return SYSTEM_2CPU


def cpu_env(threads: str) -> dict[str, str]:
    return {"CUDA_VISIBLE_DEVICES": "-1", **dict.fromkeys(THREAD_ENVS, threads)}


def gpu_envs(*devices: str) -> list[dict[str, str]]:
    return [{"CUDA_VISIBLE_DEVICES": d} for d in devices]


def count(traits: Any, request: Any, wpr: float) -> int:
    return DefaultStrategy.get_worker_count(traits, request, wpr, system=system)


def envs(traits: Any, request: Any, wpr: float) -> list[dict[str, str]]:
    n = count(traits, request, wpr)
    return [
        DefaultStrategy.get_worker_env(traits, request, wpr, i, system=system) for i in range(n)
    ]


# (row of the reference table, class, request, wpr, count, env per worker)
WORKED = [
    (1, CPU1, {"cpu": 4}, 1, 4, [cpu_env("1")] * 4),
    (2, CPU1, {"cpu": "500m"}, 1, 1, [cpu_env("1")]),
    (3, CPU1, {"cpu": 2.5}, 2, 6, [cpu_env("1")] * 6),
    (4, CPUM, {"cpu": 4}, 1, 1, [cpu_env("4")]),
    (5, CPUM, {"cpu": 3.5}, 3, 3, [cpu_env("4")] * 3),
    (8, GPU, {"nvidia.com/gpu": 2}, 1, 2, gpu_envs("0", "1")),
    (9, GPU, {"nvidia.com/gpu": [2, 7]}, 2, 4, gpu_envs(*"2277")),
    (10, GPU, {"nvidia.com/gpu": [0, 1, 2, 3]}, 0.5, 2, gpu_envs("0,1", "2,3")),
    (11, GPU, {"nvidia.com/gpu": [0, 1, 2]}, 0.5, 2, gpu_envs("0,1", "2")),
    (15, GPU_CPU, {"nvidia.com/gpu": 2, "cpu": 4}, 1, 2, gpu_envs("0", "1")),
    (16, GPU, {"nvidia.com/gpu": 0, "cpu": 2}, 1, 2, [cpu_env("1")] * 2),
    (17, CPUM, {"nvidia.com/gpu": 2, "cpu": 2}, 1, 1, [cpu_env("2")]),
    (20, CPU1, None, 1, 2, [cpu_env("1")] * 2),
    (21, CPUM, None, 1, 1, [cpu_env("2")]),
    (22, GPU, {"nvidia.com/gpu": -1, "cpu": 1}, 1, 1, [cpu_env("1")]),
]


@pytest.mark.parametrize(("row", "traits", "request_", "wpr", "workers", "expected"), WORKED)
def test_worked_cases_match_bentoml(
    row: int, traits: Any, request_: Any, wpr: float, workers: int, expected: list[dict[str, str]]
) -> None:
    assert count(traits, request_, wpr) == workers
    got = envs(traits, request_, wpr)
    assert [list(e.items()) for e in got] == [list(e.items()) for e in expected]


# Rows where BentoML raises or returns nonsense: ours raise ValueError naming the problem.
BROKEN = [
    (6, CPUM, {"cpu": 4}, 0.5, "int workers_per_resource"),  # BentoML: count raises, env works
    (7, CPU1, {"cpu": 4}, 0.5, "int workers_per_resource"),  # BentoML: count 2.0 (float)
    (12, GPU, {"nvidia.com/gpu": [0, 1, 2, 3, 4]}, 0.4, "do not cover"),  # GPU 4 idle
    (13, GPU, {"nvidia.com/gpu": [0, 1]}, 1.5, "must be <= 1"),  # count 3, env raises
    (14, GPU, {"nvidia.com/gpu": 1}, 0.5, "only 1 are assigned"),  # env IndexError
    (18, GPU, {"nvidia.com/gpu": 0}, 1, "No known supported resource"),
    (19, CPU1, {}, 1, "No known supported resource"),
]


@pytest.mark.parametrize(("row", "traits", "request_", "wpr", "message"), BROKEN)
def test_bentoml_failures_become_value_errors(
    row: int, traits: Any, request_: Any, wpr: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as count_error:
        count(traits, request_, wpr)
    assert traits.__name__ in str(count_error.value)
    with pytest.raises(ValueError, match=message):
        DefaultStrategy.get_worker_env(traits, request_, wpr, 0, system=system)


def test_row_23_missing_multi_threading_attribute_is_named() -> None:
    partial = type("GPUOnly", (), {"SUPPORTED_RESOURCES": ("nvidia.com/gpu",)})
    with pytest.raises(ValueError, match=r"GPUOnly.*SUPPORTS_CPU_MULTI_THREADING"):
        count(partial, {"nvidia.com/gpu": 0, "cpu": 2}, 1)
    # The GPU path never needs it, as in BentoML.
    assert count(partial, {"nvidia.com/gpu": 2}, 1) == 2


@pytest.mark.parametrize(
    ("request_", "wpr", "expected"),
    [
        ({"nvidia.com/gpu": 2}, 1, 2),
        ({"nvidia.com/gpu": 2}, 2, 4),
        ({"nvidia.com/gpu": [2, 7]}, 1, 2),
        ({"nvidia.com/gpu": [2, 7]}, 2, 4),
        ({"nvidia.com/gpu": [2, 7]}, 0.5, 1),
        ({"nvidia.com/gpu": [2, 7, 9]}, 0.5, 2),
        ({"nvidia.com/gpu": [2, 7, 8, 9]}, 0.5, 2),
    ],
)
def test_bentoml_gpu_counts(request_: dict[str, Any], wpr: float, expected: int) -> None:
    assert count(GPU, request_, wpr) == expected


def test_bentoml_gpu_envs() -> None:
    def cvd(request: Any, wpr: float, i: int) -> str:
        return DefaultStrategy.get_worker_env(GPU, request, wpr, i, system=system)[
            "CUDA_VISIBLE_DEVICES"
        ]

    assert [cvd({"nvidia.com/gpu": 2}, 1, i) for i in range(2)] == ["0", "1"]
    assert cvd({"nvidia.com/gpu": [2, 7]}, 1, 1) == "7"
    assert [cvd({"nvidia.com/gpu": 2}, 2, i) for i in range(3)] == ["0", "0", "1"]
    assert [cvd({"nvidia.com/gpu": [2, 7]}, 2, i) for i in (1, 2)] == ["2", "7"]
    assert cvd({"nvidia.com/gpu": [2, 7]}, 0.5, 0) == "2,7"
    assert [cvd({"nvidia.com/gpu": [2, 7, 8, 9]}, 0.5, i) for i in range(2)] == ["2,7", "8,9"]
    assert cvd({"nvidia.com/gpu": [2, 7, 8, 9]}, 0.25, 0) == "2,7,8,9"


def test_bentoml_cpu_counts_and_envs() -> None:
    assert count(CPU1, {"cpu": 2}, 1) == 2
    assert count(CPU1, {"cpu": 0.5}, 1) == 1
    assert count(CPU1, {"cpu": 2}, 2) == 4
    assert count(CPUM, {"cpu": 4}, 1) == 1
    assert count(CPUM, {"cpu": 4}, 2) == 2
    assert envs(CPUM, {"cpu": 3.5}, 1) == [cpu_env("4")]


def test_bug_8_gpu_count_and_slices_must_agree() -> None:
    # BentoML: count 2 but slices of 2 leave GPU 9 to a third worker that is never spawned.
    with pytest.raises(ValueError, match=r"nvidia.com/gpu.*\[2, 5, 7, 8, 9\].*0.4"):
        count(GPU, {"nvidia.com/gpu": [2, 5, 7, 8, 9]}, 0.4)


def test_worker_index_outside_the_worker_count_is_rejected() -> None:
    # BentoML answers worker 2 of a 2-worker CPU runner, and IndexErrors on GPUs.
    for request in ({"cpu": 2}, {"nvidia.com/gpu": 2}):
        with pytest.raises(ValueError, match=r"worker_index 2 .*valid: 0\.\.1"):
            DefaultStrategy.get_worker_env(CPU1 if "cpu" in request else GPU, request, 1, 2)


def test_multi_threaded_oversubscription_keeps_parity_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="kuberunner.strategy"):
        assert count(CPUM, {"cpu": 4}, 2) == 2
    assert "oversubscribed 2 times" in caplog.text
    assert envs(CPUM, {"cpu": 4}, 2) == [cpu_env("4")] * 2


def test_cpu_fallback_for_gpu_runnable_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="kuberunner.strategy"):
        assert count(GPU, {"cpu": 2}, 1) == 2
    assert "No known supported resource available for GPU, falling back to using CPU." in (
        caplog.text
    )


def test_system_requests_go_through_the_injected_probe() -> None:
    calls: list[int] = []

    def probe() -> SystemResources:
        calls.append(1)
        return SystemResources(cpu=3.0, gpus=[0, 1, 2])

    assert DefaultStrategy.get_worker_count(GPU, None, 1, system=probe) == 3
    # Bug 10: a whole-section "system" string means the system's resources, as None does.
    assert DefaultStrategy.get_worker_count(CPU1, "system", 1, system=probe) == 3
    assert DefaultStrategy.get_worker_count(CPUM, {"cpu": "system"}, 1, system=probe) == 1
    env = DefaultStrategy.get_worker_env(GPU, {"nvidia.com/gpu": "system"}, 1, 2, system=probe)
    assert env == {"CUDA_VISIBLE_DEVICES": "2"}
    assert len(calls) == 4  # one probe per call that resolves "system"


def test_explicit_requests_do_no_io() -> None:
    def probe() -> SystemResources:
        raise AssertionError("must not be called")

    assert DefaultStrategy.get_worker_count(CPU1, {"cpu": "1500m"}, 1, system=probe) == 2


@pytest.mark.parametrize(
    ("request_", "wpr", "fragment"),
    [
        ({"cpu": 2}, 0, "workers_per_resource 0"),
        ({"cpu": 2}, -1, "workers_per_resource -1"),
        ({"cpu": 2}, True, "workers_per_resource True"),
        ({"cpu": "10mx"}, 1, "resource 'cpu': invalid value '10mx'"),
        ({"cpu": 1.5, "nvidia.com/gpus": 1}, 1, "unknown resource 'nvidia.com/gpus'"),
        ({"nvidia.com/gpu": 1.5}, 1, "resource 'nvidia.com/gpu'"),
        ({"nvidia.com/gpu": [0, 0]}, 1, "duplicate device index"),
        ({"memory": "lots", "cpu": 1}, 1, "resource 'memory'"),
        (["cpu"], 1, "must be a mapping"),
    ],
)
def test_invalid_inputs_name_runnable_and_value(request_: Any, wpr: Any, fragment: str) -> None:
    with pytest.raises(ValueError, match="Runnable 'GPUCPU'") as info:
        DefaultStrategy.get_worker_count(GPU_CPU, request_, wpr, system=system)
    assert fragment in str(info.value)


def test_memory_is_accepted_and_ignored() -> None:
    assert count(CPU1, {"cpu": 2, "memory": "1Gi"}, 1) == 2


def test_traits_accept_any_runnable_like_class() -> None:
    class Model:
        SUPPORTED_RESOURCES = ("cpu",)
        SUPPORTS_CPU_MULTI_THREADING = True

    assert count(Model, {"cpu": "3"}, 1) == 1
    traits = runnable_traits("FromOperator", ["nvidia.com/gpu"], False)
    assert traits.__name__ == "FromOperator"
    assert traits.SUPPORTED_RESOURCES == ("nvidia.com/gpu",)  # type: ignore[attr-defined]
    plan = plan_workers(traits, {"nvidia.com/gpu": 3}, 1)
    assert (plan.count, plan.env(2)) == (3, {"CUDA_VISIBLE_DEVICES": "2"})

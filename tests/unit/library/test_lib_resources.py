"""Resource parsing (Kubernetes quantities, GPU counts and ids) and system resource probing."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from kuberunner import resources
from kuberunner.exceptions import ResourceError


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("500m", 0.5),
        ("100m", 0.1),
        ("1.5", 1.5),
        ("2", 2.0),
        (2, 2.0),
        (0.3, 0.3),
        ("5", 5.0),
        ("2000m", 2.0),
        ("1e1", 10.0),
        ("1k", 1000.0),
        (".5", 0.5),
        ("0", 0.0),
    ],
)
def test_cpu_quantities(value: int | float | str, expected: float) -> None:
    assert resources.parse_cpu(value) == pytest.approx(expected)


@pytest.mark.parametrize(
    "value",
    ["10mx", "abc", "m", " 2 ", "", "1.5.2", "-1", -0.5, float("nan"), float("inf"), True, (1,)],
)
def test_malformed_cpu_is_an_error_naming_resource_and_value(value: object) -> None:
    with pytest.raises(ResourceError, match="resource 'cpu'") as info:
        resources.parse_cpu(value)  # type: ignore[arg-type]
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1Gi", 1024**3),
        ("512M", 512 * 10**6),
        ("1e9", 10**9),
        ("1.5Gi", 1610612736),
        ("128974848", 128974848),
        ("129e6", 129000000),
        ("123Mi", 123 * 1024**2),
        (1000, 1000),
        ("0.5", 1),  # Kubernetes rounds fractional bytes up
    ],
)
def test_memory_quantities(value: int | str, expected: int) -> None:
    assert resources.parse_memory(value) == expected


@pytest.mark.parametrize("value", ["1Gb", "lots", "-1Gi", "1 Gi", False])
def test_malformed_memory(value: object) -> None:
    with pytest.raises(ResourceError, match="resource 'memory'"):
        resources.parse_memory(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, [0]),
        ("5", [0, 1, 2, 3, 4]),
        (2, [0, 1]),
        ("3", [0, 1, 2]),
        ([1, 3], [1, 3]),
        (["1", "3"], [1, 3]),
        (-1, []),
        ("-1", []),
        (0, []),
        ([], []),
    ],
)
def test_gpu_counts_and_ids(value: object, expected: list[int]) -> None:
    assert resources.parse_gpu(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value", ["[1, 2, 3]", "100m", -2, "-2", (1, 2), 1.5, "1.5", True, [0, 0], [-1], ["x"]]
)
def test_invalid_gpu_values(value: object) -> None:
    with pytest.raises(ResourceError, match=r"resource 'nvidia\.com/gpu'"):
        resources.parse_gpu(value)  # type: ignore[arg-type]


def test_unknown_resource_is_named() -> None:
    with pytest.raises(ResourceError, match=r"unknown resource 'amd\.com/gpu' \(value 1\)"):
        resources.parse_resource("amd.com/gpu", 1)


def test_validate_resources_accepts_system_forms() -> None:
    resources.validate_resources(None)
    resources.validate_resources("system")
    resources.validate_resources({"cpu": "system", "nvidia.com/gpu": [0], "memory": "1Gi"})
    with pytest.raises(ResourceError):
        resources.validate_resources("everything")
    with pytest.raises(ResourceError, match="'cpu'"):
        resources.validate_resources({"cpu": "lots"})


def test_parse_quantity_is_exact() -> None:
    assert resources.parse_quantity("1001m") == Decimal("1.001")
    assert resources.parse_quantity("2Ki") == 2048
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        resources.parse_quantity("1KiB")


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert resources.cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert resources.cgroup_cpu_quota(tmp_path) is None


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert resources.cgroup_cpu_quota(tmp_path) == 0.5
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert resources.cgroup_cpu_quota(tmp_path) is None


def test_system_cpu_is_bounded_by_the_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("25000 100000\n")
    assert resources.system_cpu(tmp_path) == 0.25
    assert resources.system_cpu(tmp_path / "missing") > 0


@pytest.mark.parametrize(
    ("visible", "expected"),
    [("0,1", [0, 1]), ("3", [0]), ("", []), ("-1", []), ("0,-1,2", [0]), ("GPU-a1,GPU-b2", [0, 1])],
)
def test_visible_gpus_from_cuda_visible_devices(visible: str, expected: list[int]) -> None:
    assert resources.visible_gpus({"CUDA_VISIBLE_DEVICES": visible}) == expected


def test_detect_system_resources_on_this_host() -> None:
    found = resources.detect_system_resources()
    assert found.cpu > 0
    assert all(isinstance(i, int) for i in found.gpus)

"""Resource requests: Kubernetes quantities for `cpu` and `memory`, `nvidia.com/gpu` counts or ids.

Parsing follows Kubernetes' quantity grammar (`500m`, `1.5`, `2`, `1Gi`, `512M`, `1e9`), not
BentoML's: BentoML reads cpu strings with a *prefix* match on `([0-9]+)m`, so `"10mx"` silently
means 0.01 CPU, and it accepts surrounding whitespace and rejects `"1k"`. Here `"10mx"` and
`" 2 "` are errors and `"1k"` is 1000, exactly as the API server would read them. Numbers
(int/float) are taken as they are, so the strategy sees the same values BentoML does.

Deliberate differences from BentoML (each one a case where BentoML silently accepts nonsense):
negative cpu/memory, non-finite numbers, bools, duplicate GPU ids and negative GPU ids are
errors at parse time; GPU counts `-1` and `0` still mean "no GPU", as in BentoML.

The only I/O here is `detect_system_resources()` (cgroup CPU quota, visible GPUs), which the
strategy receives as an injectable function.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

from kuberunner.envvars import CUDA_VISIBLE_DEVICES
from kuberunner.exceptions import ResourceError

CPU: Final = "cpu"
MEMORY: Final = "memory"
NVIDIA_GPU: Final = "nvidia.com/gpu"
KNOWN_RESOURCES: Final = (CPU, MEMORY, NVIDIA_GPU)
SYSTEM: Final = "system"

_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)|[eE](?P<exponent>[+-]?[0-9]+))?"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse_quantity(text: str) -> Decimal:
    """Parse a Kubernetes quantity string exactly (no float rounding).

    >>> parse_quantity("500m"), parse_quantity("1Gi"), parse_quantity("1e3")
    (Decimal('0.500'), Decimal('1073741824'), Decimal('1E+3'))
    """
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"'{text}' is not a Kubernetes quantity (e.g. '500m', '2', '1Gi')")
    number = Decimal(match["number"])
    suffix, exponent = match["suffix"], match["exponent"]
    if exponent is not None:
        if len(exponent.lstrip("+-")) > 4:  # Kubernetes bounds exponents far below this too
            raise ValueError(f"'{text}' has an exponent out of range")
        return number.scaleb(int(exponent))
    if suffix in _BINARY:
        return number * (Decimal(1024) ** _BINARY[suffix])
    return number.scaleb(_DECIMAL[suffix or ""])


def _reject_bool(kind: str, value: object) -> None:
    if isinstance(value, bool):
        raise ResourceError(f"resource '{kind}': {value!r} is a bool, not a quantity")


def parse_cpu(value: int | float | str) -> float:
    """CPU cores as a float: `"500m"` -> 0.5, `"1.5"` -> 1.5, `2` -> 2.0."""
    _reject_bool(CPU, value)
    if isinstance(value, int | float):
        cores = float(value)
    elif isinstance(value, str):
        try:
            cores = float(parse_quantity(value))
        except ValueError as exc:
            raise ResourceError(f"resource 'cpu': invalid value {value!r}: {exc}") from None
    else:
        raise ResourceError(
            f"resource 'cpu': invalid value {value!r}: expected a number or a quantity string"
        )
    if not math.isfinite(cores) or cores < 0:
        raise ResourceError(f"resource 'cpu': invalid value {value!r}: must be finite and >= 0")
    return cores


def parse_memory(value: int | float | str) -> int:
    """Memory in bytes, rounded up as Kubernetes does: `"1Gi"`, `"512M"`, `"1e9"`, `"1.5Gi"`."""
    _reject_bool(MEMORY, value)
    try:
        if isinstance(value, str):
            amount = parse_quantity(value)
        elif isinstance(value, int | float):
            amount = Decimal(value)
        else:
            raise ValueError("expected a number or a quantity string")
        if not amount.is_finite() or amount < 0:
            raise ValueError("must be finite and >= 0")
    except (ValueError, InvalidOperation) as exc:
        raise ResourceError(f"resource 'memory': invalid value {value!r}: {exc}") from None
    return math.ceil(amount)


def _gpu_count_to_ids(value: object, count: int) -> list[int]:
    # BentoML reads -1 and 0 as "no GPU"; anything lower is an error there too.
    if count < -1:
        raise ResourceError(
            f"resource 'nvidia.com/gpu': invalid count {value!r}: must be >= 0 (or -1 for none)"
        )
    return list(range(max(count, 0)))


def _gpu_id(item: object, value: object) -> int:
    if isinstance(item, str) and item.isdecimal():
        return int(item)
    if isinstance(item, int) and not isinstance(item, bool) and item >= 0:
        return item
    raise ResourceError(
        f"resource 'nvidia.com/gpu': invalid device index {item!r} in {value!r}: "
        "device indexes are integers >= 0"
    )


def parse_gpu(value: int | str | Sequence[int | str]) -> list[int]:
    """GPU device indexes: an int count (`2` -> [0, 1]) or an explicit list of indexes."""
    _reject_bool(NVIDIA_GPU, value)
    if isinstance(value, int):
        return _gpu_count_to_ids(value, value)
    if isinstance(value, str):
        try:
            amount = parse_quantity(value)
        except ValueError as exc:
            raise ResourceError(
                f"resource 'nvidia.com/gpu': invalid value {value!r}: {exc}"
            ) from None
        if amount != amount.to_integral_value():
            raise ResourceError(
                f"resource 'nvidia.com/gpu': invalid value {value!r}: GPUs are whole devices"
            )
        return _gpu_count_to_ids(value, int(amount))
    if isinstance(value, list):
        ids = [_gpu_id(item, value) for item in value]
        if len(set(ids)) != len(ids):
            raise ResourceError(
                f"resource 'nvidia.com/gpu': duplicate device index in {value!r}: "
                "each GPU can be listed once"
            )
        return ids
    raise ResourceError(
        f"resource 'nvidia.com/gpu': invalid value {value!r}: expected an int count, "
        "a count string or a list of device indexes"
    )


def parse_resource(kind: str, value: Any) -> float | int | list[int]:
    """Parse one resource value by its name; unknown names are errors."""
    if kind == CPU:
        return parse_cpu(value)
    if kind == MEMORY:
        return parse_memory(value)
    if kind == NVIDIA_GPU:
        return parse_gpu(value)
    known = ", ".join(KNOWN_RESOURCES)
    raise ResourceError(f"unknown resource '{kind}' (value {value!r}); known resources: {known}")


def validate_resources(resources: object) -> None:
    """Check a `resources` config value: a mapping of known resources, `"system"` or None."""
    if resources is None or resources == SYSTEM:
        return
    if not isinstance(resources, Mapping):
        raise ResourceError(f"resources must be a mapping, 'system' or null, not {resources!r}")
    for kind, value in resources.items():
        if value != SYSTEM:
            parse_resource(str(kind), value)


@dataclass(frozen=True)
class SystemResources:
    """What this process may use: CPU cores (cgroup quota aware) and visible GPU indexes."""

    cpu: float
    gpus: list[int] = field(default_factory=list)


SystemResourceProbe = Callable[[], SystemResources]


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPU quota in cores from cgroup v2 `cpu.max` or v1 `cfs_quota_us`; None when unlimited."""
    quota = period = None
    try:
        v2 = (root / "cpu.max").read_text().split()
        if v2 and v2[0] != "max":
            quota, period = int(v2[0]), int(v2[1]) if len(v2) > 1 else 100_000
    except (OSError, ValueError, IndexError):
        try:
            quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
            period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            return None
    if quota is None or period is None or quota < 0 or period <= 0:
        return None  # a negative quota means "no limit"
    return quota / period if quota else 1.0


def system_cpu(root: Path = Path("/sys/fs/cgroup")) -> float:
    """Usable CPU cores: min(cgroup quota, os.cpu_count())."""
    count = float(os.cpu_count() or 1)
    quota = cgroup_cpu_quota(root)
    return min(quota, count) if quota is not None else count


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[int]:
    """GPU indexes this process sees: NVML when importable, else `CUDA_VISIBLE_DEVICES`."""
    try:
        import pynvml  # type: ignore[import-not-found,unused-ignore]  # optional
    except ImportError:
        pass
    else:
        try:
            pynvml.nvmlInit()
            try:
                return list(range(int(pynvml.nvmlDeviceGetCount())))
            finally:
                pynvml.nvmlShutdown()
        except Exception:  # no driver or library: no usable GPU
            return []
    env = os.environ if environ is None else environ
    visible = env.get(CUDA_VISIBLE_DEVICES, "").strip()
    count = 0
    # CUDA stops at the first invalid entry; inside the process devices are renumbered 0..n-1.
    for entry in visible.split(","):
        entry = entry.strip()
        if not entry or entry.startswith("-"):
            break
        count += 1
    return list(range(count))


def detect_system_resources() -> SystemResources:
    """The default system probe used for `None` and `"system"` resource requests."""
    return SystemResources(cpu=system_cpu(), gpus=visible_gpus())

"""`kuberunner manifest MODULE:svc --image IMG`: a RunnerService written from a Python Service.

The operator never imports user code, so the traits of each runnable (SUPPORTED_RESOURCES,
SUPPORTS_CPU_MULTI_THREADING) must be in the spec; copying them by hand is how they go stale.
This command imports the service once, on the developer's machine, and writes them out with
each runner's resources, workers per resource and effective batching limits.
"""

from __future__ import annotations

import importlib
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kuberunner_operator.models import (
    API_GROUP,
    API_VERSION,
    GPU_RESOURCE,
    KIND,
    RunnerServiceSpec,
)

JSON = dict[str, Any]


class ManifestError(Exception):
    """The target cannot be turned into a RunnerService (the message says why)."""


def load_service(target: str, search_path: Sequence[str] = (".",)) -> Any:
    """Import `module:attr` (the current directory first on sys.path, as `uvicorn` does)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ManifestError(f"{target!r} is not MODULE:svc")
    for entry in reversed(search_path):
        resolved = str(Path(entry).resolve())
        if resolved not in sys.path:
            sys.path.insert(0, resolved)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ManifestError(f"cannot import {module_name}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ManifestError(f"{module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def resource_name(text: str) -> str:
    """A DNS-1123 subdomain-safe object name derived from a Service name."""
    name = re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-.")
    return name[:253].strip("-.") or "service"


def _cpu(value: Any) -> int | str:
    if isinstance(value, str):
        return value
    number = float(value)
    if number.is_integer():
        return int(number)
    return f"{math.ceil(number * 1000)}m"


def runner_resources(config: Any) -> JSON:
    """A runner's `resources` from its resource config (`cpu`, `memory`, GPU count or ids)."""
    out: JSON = {}
    if isinstance(config, Mapping):
        if config.get("cpu") not in (None, "system"):
            out["cpu"] = _cpu(config["cpu"])
        if config.get("memory") not in (None, "system"):
            out["memory"] = config["memory"]
        gpus = config.get(GPU_RESOURCE)
        if isinstance(gpus, list | tuple) and gpus:
            out[GPU_RESOURCE] = len(gpus)
        elif isinstance(gpus, int) and not isinstance(gpus, bool) and gpus > 0:
            out[GPU_RESOURCE] = gpus
    if "cpu" not in out and GPU_RESOURCE not in out:
        out["cpu"] = 1  # a resource is required; the pod otherwise gets one CPU's worth
    return out


def runnable_ref(cls: type) -> str:
    module = getattr(cls, "__module__", "")
    if not module or module == "__main__":
        raise ManifestError(
            f"runnable {cls.__qualname__} is defined in __main__; move it into an importable "
            "module so the runner image can import it"
        )
    return f"{module}:{cls.__qualname__}"


def runner_entry(runner: Any) -> JSON:
    """One `spec.runners[]` entry from a `kuberunner.Runner`."""
    cls = runner.runnable_class
    entry: JSON = {
        "name": runner.name,
        "runnable": runnable_ref(cls),
        "supportedResources": list(cls.SUPPORTED_RESOURCES),
        "supportsCpuMultiThreading": bool(cls.SUPPORTS_CPU_MULTI_THREADING),
        "resources": runner_resources(runner.resource_config),
    }
    wpr = runner.workers_per_resource
    if wpr != 1:
        entry["workersPerResource"] = wpr
    config = getattr(runner, "config", None)
    batching = getattr(config, "batching", None)
    if batching is not None and getattr(batching, "enabled", True) is False:
        entry["batching"] = {"enabled": False}
    methods: JSON = {}
    for method in getattr(runner, "runner_methods", []):
        if method.config.batchable:
            methods[method.name] = {
                "maxBatchSize": method.max_batch_size,
                "maxLatencyMs": method.max_latency_ms,
            }
    if methods:
        entry["methods"] = methods
    return entry


def service_manifest(
    service: Any, target: str, image: str, name: str | None = None, namespace: str | None = None
) -> JSON:
    """The RunnerService for `service` (anything with `.name` and `.runners`); embedded
    runners run inside the API server and get no runner entry."""
    runners = [r for r in getattr(service, "runners", []) if not getattr(r, "embedded", False)]
    if not runners:
        raise ManifestError(f"{target} has no remote runners to deploy")
    metadata: JSON = {"name": name or resource_name(str(getattr(service, "name", "service")))}
    if namespace:
        metadata["namespace"] = namespace
    spec: JSON = {
        "image": image,
        "runners": [runner_entry(r) for r in runners],
        "apiServer": {"service": target},
    }
    try:
        RunnerServiceSpec.model_validate(spec)
    except ValidationError as exc:
        raise ManifestError(f"the generated spec is invalid: {exc}") from exc
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": metadata,
        "spec": spec,
    }


def service_manifest_yaml(
    target: str, image: str, name: str | None = None, namespace: str | None = None
) -> str:
    service = load_service(target)
    body = service_manifest(service, target, image, name=name, namespace=namespace)
    header = f"# Generated by `kuberunner manifest {target} --image {image}`.\n"
    return header + yaml.safe_dump(body, sort_keys=False)

"""Runner configuration: the `runners` section of BentoML's config, read from YAML and env.

Sources, later ones winning: built-in defaults <- the YAML file named by `KUBERUNNER_CONFIG`
(must end in .yml/.yaml) <- nested JSON or YAML in `KUBERUNNER_CONFIG_OVERRIDES`. Dicts merge
key by key; anything else replaces. Under `runners`, the reserved keys (`batching`,
`resources`, ...) are the global runner config and every other key is a runner name whose
section inherits every global value it does not set. Runner sections are keyed by the
lowercased name, so `Runner(X, name="MyRunner")` finds `runners.myrunner` (BentoML looks up the
name before lowercasing, bug 3).

Errors name the path: `runners.iris.batching.max_batch_size: must be > 0`. The config is read
each time `load_config()` is called (each Runner construction), never cached at import.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError

from kuberunner import envvars
from kuberunner.exceptions import ConfigError, ResourceError
from kuberunner.merging import deep_merge
from kuberunner.resources import validate_resources

RESERVED_RUNNER_KEYS: Final = frozenset(
    {"batching", "resources", "logging", "metrics", "traffic", "workers_per_resource"}
)
_LEGACY_TIMEOUT: Final = "timeout"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_M = TypeVar("_M", bound=BaseModel)
PositiveInt = Annotated[StrictInt, Field(gt=0)]
PositiveNumber = Annotated[StrictInt | StrictFloat, Field(gt=0)]


class MethodBatchingConfig(_Strict):
    max_batch_size: PositiveInt | None = None
    max_latency_ms: PositiveInt | None = None


class BatchingConfig(_Strict):
    enabled: bool = True
    max_batch_size: PositiveInt = 100
    max_latency_ms: PositiveInt = 60000
    methods: dict[str, MethodBatchingConfig] = Field(default_factory=dict)


class TrafficConfig(_Strict):
    timeout: PositiveNumber = 900
    max_concurrency: PositiveInt | None = None


class AccessLogConfig(_Strict):
    enabled: bool = True
    request_content_length: bool | None = True
    request_content_type: bool | None = True
    response_content_length: bool | None = True
    response_content_type: bool | None = True


class LoggingConfig(_Strict):
    access: AccessLogConfig = Field(default_factory=AccessLogConfig)


class MetricsConfig(_Strict):
    enabled: bool = True
    namespace: str = "kuberunner_runner"


class RunnerConfig(_Strict):
    """One runner's effective configuration (or the global one)."""

    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    # None: the system's resources at scheduling time; "system" as a whole means the same.
    resources: dict[str, Any] | Literal["system"] | None = None
    workers_per_resource: PositiveNumber = 1
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    traffic: TrafficConfig = Field(default_factory=TrafficConfig)


class RunnerProbeConfig(_Strict):
    enabled: bool = True
    timeout: PositiveNumber = 1
    period: PositiveNumber = 10


class ApiServerTrafficConfig(_Strict):
    timeout: PositiveNumber = 60
    max_concurrency: PositiveInt | None = None


class ApiServerConfig(_Strict):
    max_runner_connections: PositiveInt = 16
    runner_probe: RunnerProbeConfig = Field(default_factory=RunnerProbeConfig)
    traffic: ApiServerTrafficConfig = Field(default_factory=ApiServerTrafficConfig)


class KuberunnerConfig(_Strict):
    """The whole validated configuration."""

    api_server: ApiServerConfig = Field(default_factory=ApiServerConfig)
    runners: RunnerConfig = Field(default_factory=RunnerConfig)
    runner_sections: dict[str, RunnerConfig] = Field(default_factory=dict)

    def runner(self, name: str) -> RunnerConfig:
        """The config of runner `name` (looked up lowercased), else the global runner config."""
        return self.runner_sections.get(name.lower(), self.runners)


def _error_text(err: Mapping[str, Any]) -> str:
    kind, ctx = err.get("type"), err.get("ctx") or {}
    if kind == "greater_than":
        return f"must be > {ctx.get('gt')}"
    if kind == "extra_forbidden":
        return "unknown key"
    return str(err.get("msg", "invalid value")).lower()


def _validate(model: type[_M], data: Any, path: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            # Drop pydantic's union branch names (e.g. "int", "literal['system']").
            loc = [str(p) for p in err["loc"] if not str(p).startswith(("literal[", "function-"))]
            loc = [p for p in loc if p not in {"int", "float", "str", "dict[str,any]", "none"}]
            where = ".".join([path, *loc]) if path else ".".join(loc)
            problems.append(f"{where}: {_error_text(err)}")
        raise ConfigError("; ".join(dict.fromkeys(problems))) from None


def _migrate_timeout(section: dict[str, Any], path: str) -> dict[str, Any]:
    """`runners[.<name>].timeout` was renamed to `...traffic.timeout`."""
    if _LEGACY_TIMEOUT not in section:
        return section
    section = dict(section)
    warnings.warn(
        f"Field '{path}.timeout' is deprecated and has been renamed to '{path}.traffic.timeout'",
        DeprecationWarning,
        stacklevel=4,
    )
    traffic = dict(section.get("traffic") or {})
    traffic.setdefault("timeout", section.pop(_LEGACY_TIMEOUT))
    section["traffic"] = traffic
    return section


def _runner_section(raw: Any, path: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: must be a mapping, not {raw!r}")
    section = _migrate_timeout(dict(raw), path)
    try:
        validate_resources(section.get("resources"))
    except ResourceError as exc:
        raise ConfigError(f"{path}.resources: {exc}") from None
    return section


def build_config(data: Mapping[str, Any]) -> KuberunnerConfig:
    """Validate a merged config dict (the shape of the YAML file)."""
    data = dict(data)
    if "runner_sections" in data:
        raise ConfigError("runner_sections: unknown key")
    raw_runners = data.pop("runners", None) or {}
    if not isinstance(raw_runners, Mapping):
        raise ConfigError(f"runners: must be a mapping, not {raw_runners!r}")
    global_raw = {k: v for k, v in raw_runners.items() if k in RESERVED_RUNNER_KEYS}
    global_raw = _runner_section({**global_raw, **_legacy(raw_runners)}, "runners")
    sections: dict[str, RunnerConfig] = {}
    for key, raw in raw_runners.items():
        if key in RESERVED_RUNNER_KEYS or key == _LEGACY_TIMEOUT:
            continue
        if not isinstance(key, str):
            raise ConfigError(
                f"runners.{key}: runner names must be strings (YAML reads unquoted keys such as "
                "off, no or 123 as other types; quote them)"
            )
        name = key.lower()
        if name in sections:
            raise ConfigError(f"runners.{key}: runner '{name}' is configured twice")
        merged = deep_merge(global_raw, _runner_section(raw, f"runners.{key}"))
        sections[name] = _validate(RunnerConfig, merged, f"runners.{key}")
    top = _validate(KuberunnerConfig, {**data, "runners": global_raw}, "")
    return top.model_copy(update={"runner_sections": sections})


def _legacy(raw_runners: Mapping[str, Any]) -> dict[str, Any]:
    if _LEGACY_TIMEOUT in raw_runners:
        return {_LEGACY_TIMEOUT: raw_runners[_LEGACY_TIMEOUT]}
    return {}


def _read_file(path: str) -> dict[str, Any]:
    if not path.endswith((".yml", ".yaml")):
        raise ConfigError(f"{envvars.CONFIG}={path}: the config file must end in .yml or .yaml")
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{envvars.CONFIG}={path}: cannot read the config file: {exc}") from None
    return _as_mapping(text, f"{envvars.CONFIG}={path}")


def _as_mapping(text: str, source: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML/JSON: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{source}: must be a mapping at the top level, not {loaded!r}")
    return loaded


def load_config(environ: Mapping[str, str] | None = None) -> KuberunnerConfig:
    """Read and validate the configuration from `KUBERUNNER_CONFIG` and the overrides."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path := env.get(envvars.CONFIG):
        data = deep_merge(data, _read_file(path))
    if overrides := env.get(envvars.CONFIG_OVERRIDES):
        data = deep_merge(data, _as_mapping(overrides, envvars.CONFIG_OVERRIDES))
    return build_config(data)


def dumps_overrides(config: Mapping[str, Any]) -> str:
    """Serialise an overrides dict for `KUBERUNNER_CONFIG_OVERRIDES` (JSON, stable order)."""
    return json.dumps(config, sort_keys=True)

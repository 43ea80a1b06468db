"""Configuration: sources and merge order, inheritance, validation messages, lookups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kuberunner.config import build_config, load_config
from kuberunner.exceptions import ConfigError


def env_for(tmp_path: Path, text: str | None = None, overrides: object = None) -> dict[str, str]:
    env: dict[str, str] = {}
    if text is not None:
        path = tmp_path / "config.yaml"
        path.write_text(text)
        env["KUBERUNNER_CONFIG"] = str(path)
    if overrides is not None:
        env["KUBERUNNER_CONFIG_OVERRIDES"] = (
            overrides if isinstance(overrides, str) else json.dumps(overrides)
        )
    return env


def test_defaults() -> None:
    config = load_config({})
    runner = config.runner("anything")
    assert runner.batching.enabled is True
    assert (runner.batching.max_batch_size, runner.batching.max_latency_ms) == (100, 60000)
    assert runner.resources is None
    assert runner.workers_per_resource == 1
    assert (runner.traffic.timeout, runner.traffic.max_concurrency) == (900, None)
    assert config.api_server.runner_probe.timeout == 1


def test_runner_sections_inherit_global_values(tmp_path: Path) -> None:
    text = """
runners:
  batching: {enabled: true, max_batch_size: 10}
  logging: {access: {enabled: false}}
  resources: {cpu: 4}
  traffic: {timeout: 50}
  test_runner_1:
    workers_per_resource: 2
  test_runner_gpu:
    resources: {nvidia.com/gpu: 1}
    traffic: {timeout: 100}
  test_runner_none:
    resources: null
"""
    config = load_config(env_for(tmp_path, text))
    one = config.runner("test_runner_1")
    assert (one.workers_per_resource, one.batching.max_batch_size) == (2, 10)
    assert one.logging.access.enabled is False
    assert one.resources == {"cpu": 4}
    assert one.traffic.timeout == 50
    gpu = config.runner("test_runner_gpu")
    assert gpu.resources == {"cpu": 4, "nvidia.com/gpu": 1}
    assert gpu.traffic.timeout == 100
    assert config.runner("test_runner_none").resources is None


def test_overrides_merge_over_the_file(tmp_path: Path) -> None:
    text = "runners:\n  batching: {max_batch_size: 5, max_latency_ms: 9}\n"
    overrides = {"runners": {"batching": {"max_batch_size": 7}, "iris": {"resources": {"cpu": 1}}}}
    config = load_config(env_for(tmp_path, text, overrides))
    iris = config.runner("iris")
    assert (iris.batching.max_batch_size, iris.batching.max_latency_ms) == (7, 9)
    assert iris.resources == {"cpu": 1}


def test_overrides_may_be_yaml(tmp_path: Path) -> None:
    config = load_config(env_for(tmp_path, None, "runners:\n  iris:\n    workers_per_resource: 3"))
    assert config.runner("iris").workers_per_resource == 3


def test_gpu_lists_are_kept(tmp_path: Path) -> None:
    config = load_config(
        env_for(tmp_path, None, {"runners": {"g": {"resources": {"nvidia.com/gpu": [1, 2, 4]}}}})
    )
    assert config.runner("g").resources == {"nvidia.com/gpu": [1, 2, 4]}


def test_gpu_list_as_string_is_an_error(tmp_path: Path) -> None:
    # BentoML keeps "[1, 2, 4]" and fails later, at scheduling time.
    with pytest.raises(ConfigError, match=r"runners\.g\.resources: .*nvidia\.com/gpu"):
        load_config(
            env_for(
                tmp_path, None, {"runners": {"g": {"resources": {"nvidia.com/gpu": "[1, 2, 4]"}}}}
            )
        )


def test_legacy_timeout_is_migrated_with_a_warning(tmp_path: Path) -> None:
    text = "runners:\n  iris:\n    timeout: 60\n"
    with pytest.warns(DeprecationWarning, match=r"'runners\.iris\.timeout' is deprecated"):
        config = load_config(env_for(tmp_path, text))
    assert config.runner("iris").traffic.timeout == 60


def nested(path: str, value: object) -> dict[str, object]:
    """{"a": {"b": value}} from "a.b"."""
    result: object = value
    for key in reversed(path.split(".")):
        result = {key: result}
    assert isinstance(result, dict)
    return result


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("runners.iris.batching.max_batch_size", 0, "must be > 0"),
        ("runners.batching.max_latency_ms", -5, "must be > 0"),
        ("runners.iris.batching.max_batch_siz", 3, "unknown key"),
        ("runners.iris.workers_per_resource", 0, "must be > 0"),
        ("runners.iris.traffic.timeout", 0, "must be > 0"),
        ("runners.iris.traffic.max_concurrency", 0, "must be > 0"),
        ("runners.iris.batching.enabled", "maybe", "input should be a valid boolean"),
        ("runners.iris.batching.methods.p.max_batch_size", 0, "must be > 0"),
        ("runner", {}, "unknown key"),
    ],
)
def test_errors_name_the_path(path: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(nested(path, value))
    assert f"{path}: {message}" in str(info.value)


@pytest.mark.parametrize(
    ("runner_section", "message"),
    [
        ({"resources": {"cpu": "10mx"}}, "runners.iris.resources: resource 'cpu'"),
        ({"resources": {"gpu": 1}}, "runners.iris.resources: unknown resource 'gpu'"),
        (3, "runners.iris: must be a mapping"),
    ],
)
def test_section_errors_name_the_runner(runner_section: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"runners": {"iris": runner_section}})
    assert message in str(info.value)


def test_config_file_must_be_yaml(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{}")
    with pytest.raises(ConfigError, match=r"must end in \.yml or \.yaml"):
        load_config({"KUBERUNNER_CONFIG": str(path)})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config({"KUBERUNNER_CONFIG": str(tmp_path / "missing.yml")})


def test_malformed_overrides(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KUBERUNNER_CONFIG_OVERRIDES: must be a mapping"):
        load_config(env_for(tmp_path, None, "[1, 2]"))
    with pytest.raises(ConfigError, match="not valid YAML/JSON"):
        load_config(env_for(tmp_path, None, '{"runners": {'))


def test_runner_sections_are_found_by_lowercased_name() -> None:
    config = build_config({"runners": {"MyRunner": {"workers_per_resource": 2}}})
    assert config.runner("myrunner").workers_per_resource == 2
    assert config.runner("MYRUNNER").workers_per_resource == 2
    with pytest.raises(ConfigError, match="configured twice"):
        build_config({"runners": {"a": {}, "A": {}}})


def test_unquoted_yaml_boolean_keys_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="runner names must be strings"):
        load_config(env_for(tmp_path, "runners:\n  off: {workers_per_resource: 2}\n"))


def test_resources_system_forms() -> None:
    assert build_config({"runners": {"resources": "system"}}).runner("x").resources == "system"
    section = {"resources": {"cpu": "system"}}
    assert build_config({"runners": {"x": section}}).runner("x").resources == {"cpu": "system"}
    with pytest.raises(ConfigError, match=r"runners\.resources"):
        build_config({"runners": {"resources": "all"}})

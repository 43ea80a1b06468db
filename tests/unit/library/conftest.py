"""Library tests never see the developer's own kuberunner configuration."""

from __future__ import annotations

import pytest

from kuberunner import envvars


@pytest.fixture(autouse=True)
def _clean_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(envvars.CONFIG, raising=False)
    monkeypatch.delenv(envvars.CONFIG_OVERRIDES, raising=False)

"""Library tests never see the developer's own kuberunner configuration."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _clean_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERUNNER_CONFIG", raising=False)
    monkeypatch.delenv("KUBERUNNER_CONFIG_OVERRIDES", raising=False)

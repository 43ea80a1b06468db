"""Shared fixtures.

- `cluster` (session): a real local control plane (`kuberunner_dev.cluster`) named
  `pytest-<pid>`, with state in a temporary directory; torn down at the end of the session,
  also when tests fail. Yields a `ClusterInfo` (`.kubeconfig`, `.name`, `.server`, `.token`,
  `.ca_cert`, `.state_dir`). Nodes: kwok-cpu-0/1 and kwok-gpu-0/1 (see docs/contracts.md).
- `fresh_namespace` (function): a namespace created for one test and deleted after it.
- `kuberunner_env` (session): an environment for running the `kuberunner` CLI against the
  session cluster's state directory (`KUBERUNNER_CLUSTERS_DIR`).

Use `k8s_helpers.kubectl(cluster, ...)` to run the project's kubectl against the cluster.
Tests that use `cluster` (directly or through another fixture) get the `cluster` marker
automatically, so `-m "not cluster"` runs everything that needs no control plane.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator

import pytest

from k8s_helpers import kubectl
from kuberunner_dev.cluster import ClusterInfo, down, up


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterInfo]:
    """A running dev cluster for the whole session (about 5 s to start once binaries exist)."""
    clusters_dir = tmp_path_factory.mktemp("clusters")
    name = f"pytest-{os.getpid()}"
    try:
        info = up(name, clusters_dir=clusters_dir, die_with_parent=True)
        yield info
    finally:
        down(name, clusters_dir=clusters_dir)


@pytest.fixture(scope="session")
def kuberunner_env(cluster: ClusterInfo) -> dict[str, str]:
    """os.environ plus KUBERUNNER_CLUSTERS_DIR and KUBECONFIG pointing at the session cluster."""
    return {
        **os.environ,
        "KUBERUNNER_CLUSTERS_DIR": str(cluster.state_dir.parent),
        "KUBECONFIG": str(cluster.kubeconfig),
    }


@pytest.fixture
def fresh_namespace(cluster: ClusterInfo, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new namespace named after the test; deleted (without waiting) afterwards."""
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{base}-{secrets.token_hex(3)}"
    kubectl(cluster, "create", "namespace", name)
    try:
        yield name
    finally:
        kubectl(cluster, "delete", "namespace", name, "--wait=false", check=False)

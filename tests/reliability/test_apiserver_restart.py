"""kube-apiserver stopped and started again (same binary, same flags) while the operator is
reconciling a burst: the operator reconnects by itself and every service converges. Runs on a
dedicated dev cluster, so the session cluster of the other tests is never disturbed."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from test_operator_support import OperatorProcess, install_crd, new_namespace, rsvc, runner

from kuberunner_dev.cluster import ClusterInfo, attach_process, down, processes, up
from kuberunner_dev.cluster.cluster import api_client
from kuberunner_dev.cluster.components import Layout
from kuberunner_dev.cluster.state import load
from operator_support import RSVC_PATH, child_census, wait_all_converged

Figures = Callable[[str, object], None]


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[tuple[ClusterInfo, Path]]:
    clusters_dir = tmp_path / "clusters"
    name = f"rel-api-{os.getpid()}"
    try:
        yield up(name, clusters_dir=clusters_dir, die_with_parent=True), clusters_dir
    finally:
        down(name, clusters_dir=clusters_dir)


def _api_ready(info: ClusterInfo) -> bool:
    try:
        with api_client(info, timeout=2) as api:
            return api.get("/readyz").status_code == 200
    except httpx.HTTPError:
        return False


def restart_apiserver(info: ClusterInfo, clusters_dir: Path, down_seconds: float) -> float:
    """Stop kube-apiserver (SIGTERM), wait, start it with its exact argv; returns the monotonic
    time at which it answered /readyz again. The new process is attached to the cluster so
    `down` stops it."""
    layout = Layout(info.state_dir)
    state = load(layout.state_file)
    assert state is not None
    record = next(c for c in state.components if c.name == "kube-apiserver")
    argv = Path(f"/proc/{record.pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    processes.stop([record.process])
    assert not _api_ready(info)
    time.sleep(down_seconds)
    log = info.state_dir / "kube-apiserver-restarted.log"
    ref = processes.spawn([a.decode() for a in argv], log, cwd=info.state_dir, die_with_parent=True)
    attach_process(
        info.name, "kube-apiserver-restarted", ref, record.health_url, log,
        clusters_dir=clusters_dir,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while not _api_ready(info):
        assert processes.is_alive(ref), log.read_text()[-2000:]
        assert time.monotonic() < deadline, "kube-apiserver did not come back"
        time.sleep(0.2)
    return time.monotonic()


def test_operator_reconnects_after_an_apiserver_restart(
    own_cluster: tuple[ClusterInfo, Path], tmp_path: Path, long_run: bool, figures: Figures
) -> None:
    info, clusters_dir = own_cluster
    count = 30 if long_run else 10
    install_crd(info)
    ns = new_namespace(info, "kr-rel-api")
    op = OperatorProcess(info, tmp_path, f"--namespace={ns}", name="api-restart")
    try:
        op.wait_ready()
        path = RSVC_PATH.format(ns=ns)
        with api_client(info, timeout=30) as api:
            for i in range(count):
                r = api.post(path, json=rsvc(f"before-{i:02d}", [runner("r")]))
                assert r.status_code == 201, r.text
        # The operator is still reconciling the burst when the API server goes away.
        down_seconds = 15.0 if long_run else 5.0
        back = restart_apiserver(info, clusters_dir, down_seconds)
        op.alive_or_raise()
        with api_client(info, timeout=30) as api:
            for i in range(3):  # new work after the restart: the watches must be live again
                r = api.post(path, json=rsvc(f"after-{i:02d}", [runner("r")]))
                assert r.status_code == 201, r.text
        wait_all_converged(info, ns, count + 3, timeout=180)
        figures("apiserver_down_s", down_seconds)
        figures("converged_after_apiserver_back_s", round(time.monotonic() - back, 1))
        census = child_census(info, ns)
        assert census["duplicates"] == {}
        assert census["orphans"] == []
        assert census["missing"] == []
        op.alive_or_raise()
        assert "Traceback" not in op.log()
    finally:
        op.kill()
        op.stop()

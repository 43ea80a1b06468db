"""Health of a dev cluster's components: process alive, health endpoint answering 200."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx

from kuberunner_dev.cluster import hostres, processes
from kuberunner_dev.cluster.components import Layout
from kuberunner_dev.cluster.state import DEFAULT_NAME, ComponentRecord, cluster_dir, load


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int
    alive: bool
    healthy: bool
    detail: str
    rss_bytes: int
    log: Path
    log_tail: str  # filled only for a component that is not healthy


@dataclass(frozen=True)
class ClusterStatus:
    name: str
    state_dir: Path
    exists: bool
    components: tuple[ComponentStatus, ...] = ()
    # The host's cgroup layout; the real node's kubelet runs on v1 only by explicit consent.
    cgroup_mode: str = ""

    @property
    def healthy(self) -> bool:
        return self.exists and all(c.healthy for c in self.components)

    @property
    def rss_bytes(self) -> int:
        return sum(c.rss_bytes for c in self.components)


def probe(rec: ComponentRecord, token: str, ca_cert: Path) -> tuple[bool, str]:
    """GET a component's health URL; (healthy, short reason)."""
    headers: dict[str, str] = {}
    verify: ssl.SSLContext | bool = False  # KCM, scheduler: self-signed serving certificates
    if rec.name == "kube-apiserver":  # ours: verify it against the cluster CA, authenticate
        headers["Authorization"] = f"Bearer {token}"
        verify = ssl.create_default_context(cafile=str(ca_cert))
    url = rec.health_url
    try:
        with httpx.Client(verify=verify, trust_env=False, timeout=2.0) as client:
            resp = client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__}: {exc}"
    if resp.status_code == 200:
        return True, "ok"
    return False, f"HTTP {resp.status_code}: {resp.text.strip()[-200:]}"


def _component_status(
    rec: ComponentRecord, token: str, ca_cert: Path, directory: Path
) -> ComponentStatus:
    log = directory / rec.log
    alive = processes.is_alive(rec.process)
    if alive:
        healthy, detail = probe(rec, token, ca_cert)
    else:
        healthy, detail = False, "not running (crashed or killed)"
    return ComponentStatus(
        name=rec.name,
        pid=rec.pid,
        alive=alive,
        healthy=healthy,
        detail=detail,
        rss_bytes=processes.rss_bytes(rec.process),
        log=log,
        log_tail="" if healthy else processes.log_tail(log),
    )


def status(name: str = DEFAULT_NAME, clusters_dir: Path | None = None) -> ClusterStatus:
    """Per-component health of cluster `name` (process alive and its health endpoint)."""
    directory = cluster_dir(name, clusters_dir)
    state = load(Layout(directory).state_file)
    mode = hostres.cgroup_mode()
    if state is None:
        return ClusterStatus(name, directory, exists=False, cgroup_mode=mode)
    ca = Layout(directory).pki_dir / "ca.crt"
    comps = tuple(_component_status(c, state.token, ca, directory) for c in state.components)
    return ClusterStatus(name, directory, exists=True, components=comps, cgroup_mode=mode)

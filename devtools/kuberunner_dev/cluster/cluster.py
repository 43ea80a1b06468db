"""`up`, `down` and `status` of a local control plane: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok, as detached processes on 127.0.0.1; and,
optionally, one real node beside the kwok nodes (containerd, kubelet, kube-proxy, CoreDNS on
the node's bridge; see `node` and `realnode`)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from kuberunner_dev.cluster import hostres, netsetup, node, processes, realnode
from kuberunner_dev.cluster.binaries import CONTROL_PLANE, NODE, Binaries, locate
from kuberunner_dev.cluster.components import COMPONENTS, Layout, command, port_names
from kuberunner_dev.cluster.components import health_url as component_health_url
from kuberunner_dev.cluster.health import probe, status
from kuberunner_dev.cluster.kubeconfig import render_kubeconfig, write_kubeconfig
from kuberunner_dev.cluster.node import NODE_COMPONENTS, NODE_IP, NODE_NAME, NodeLayout
from kuberunner_dev.cluster.nodes import NodeShape, node_manifests
from kuberunner_dev.cluster.pki import NodePki, Pki, make_node_pki, make_pki
from kuberunner_dev.cluster.stages import build_stages, render_stages
from kuberunner_dev.cluster.state import (
    DEFAULT_NAME,
    ClusterError,
    ClusterState,
    ComponentRecord,
    cluster_dir,
    load,
    save,
)

Progress = Callable[[str], None]
# Stop order: everything else (kwok, scheduler, controller-manager, attached processes), then
# the apiserver, then etcd.
LAST_TO_STOP = ("kube-apiserver", "etcd")
NOT_READY_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ClusterInfo:
    """How to reach a running dev cluster as its admin."""

    name: str
    kubeconfig: Path
    server: str
    token: str
    ca_cert: Path
    state_dir: Path


def _info(state: ClusterState, directory: Path) -> ClusterInfo:
    layout = Layout(directory)
    return ClusterInfo(
        name=state.name,
        kubeconfig=layout.kubeconfig.resolve(),
        server=state.server,
        token=state.token,
        ca_cert=(layout.pki_dir / "ca.crt").resolve(),
        state_dir=directory.resolve(),
    )


def api_client(info: ClusterInfo, timeout: float = 5.0) -> httpx.Client:
    """An httpx client for the cluster's API as admin (TLS verified against the cluster CA)."""
    return httpx.Client(
        base_url=info.server,
        headers={"Authorization": f"Bearer {info.token}"},
        verify=ssl.create_default_context(cafile=str(info.ca_cert)),
        trust_env=False,  # never send 127.0.0.1 traffic through a proxy from the environment
        timeout=timeout,
    )


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialize up/down/attach of one cluster name across processes.

    The lock file is removed once the cluster is gone. A waiter that then wins the lock on
    the removed file notices (the path no longer names its file) and locks afresh."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    path = directory.parent / f".{directory.name}.lock"
    while True:
        fh = path.open("a")
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            current = os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        fh.close()
    try:
        yield
    finally:
        if not directory.exists():
            path.unlink(missing_ok=True)
        fh.close()  # releases the lock


class _Starter:
    """Starts components one by one, recording each in cluster.json as soon as it runs."""

    def __init__(
        self, state: ClusterState, layout: Layout, ca_cert: Path, die_with_parent: bool
    ) -> None:
        self.state = state
        self.layout = layout
        self.ca_cert = ca_cert
        self.die_with_parent = die_with_parent

    def start(self, name: str, argv: list[str]) -> ComponentRecord:
        log = self.layout.log(name)
        ref = processes.spawn(
            argv, log, cwd=self.layout.state_dir, die_with_parent=self.die_with_parent
        )
        rec = ComponentRecord(
            name=name,
            pid=ref.pid,
            start_time=ref.start_time,
            health_url=component_health_url(name, self.state.ports),
            log=str(log.relative_to(self.layout.state_dir)),
        )
        self.state.components.append(rec)
        save(self.layout.state_file, self.state)
        return rec

    def check_alive(self) -> None:
        for rec in self.state.components:
            if not processes.is_alive(rec.process):
                tail = processes.log_tail(self.layout.state_dir / rec.log)
                raise ClusterError(f"{rec.name} exited during start-up. Last log lines:\n{tail}")

    def wait(self, what: str, ready: Callable[[], bool], timeout: float) -> None:
        """Poll `ready` until true; fail early if a started component died."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            if ready():
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.1)

    def wait_healthy(self, rec: ComponentRecord, timeout: float) -> None:
        self.wait(
            f"{rec.name} to become healthy ({rec.health_url})",
            lambda: probe(rec, self.state.token, self.ca_cert)[0],
            timeout,
        )


def _nodes_ready(client: httpx.Client, expected: list[str]) -> bool:
    resp = client.get("/api/v1/nodes")
    if resp.status_code != 200:
        return False
    ready = set()
    for item in resp.json()["items"]:
        conditions = item.get("status", {}).get("conditions") or []
        taints = item.get("spec", {}).get("taints") or []
        is_ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        # The node lifecycle controller lifts its not-ready taint shortly after Ready; only
        # then does the scheduler use the node.
        if is_ready and not any(t["key"] in NOT_READY_TAINTS for t in taints):
            ready.add(item["metadata"]["name"])
    return set(expected) <= ready


def _create_nodes(client: httpx.Client, manifests: list[dict[str, Any]]) -> None:
    for manifest in manifests:
        resp = client.post("/api/v1/nodes", json=manifest)
        if resp.status_code not in (201, 409):
            raise ClusterError(f"creating node {manifest['metadata']['name']}: {resp.text}")


def _prepare_node(
    state: ClusterState, layout: Layout, node_layout: NodeLayout, bins: Binaries, pki: Pki
) -> NodePki:
    """The real node's credentials, files and host pieces (bridge, guard table, cgroup root),
    before the apiserver starts (it reads the node's tokens and certificates)."""
    realnode.ensure_free()
    node_pki = make_node_pki(pki, NODE_NAME, NODE_IP)
    realnode.write_files(node_layout, bins, state.server, pki, node_pki, state.ports)
    state.real_node = True
    save(layout.state_file, state)
    realnode.prepare_host(node_layout, state.ports["kube-apiserver"])
    return node_pki


def _start_node(
    starter: _Starter,
    bins: Binaries,
    node_layout: NodeLayout,
    client: httpx.Client,
    gpus: int,
    timeout: float,
) -> None:
    containerd = starter.start("containerd", node.command("containerd", bins, node_layout))
    starter.wait_healthy(containerd, timeout)
    # The sandbox image must be there before the first pod: nothing can be pulled.
    realnode.import_archive(bins, node_layout, bins["pause-image"])
    realnode.grant_coredns(client)
    for comp in NODE_COMPONENTS[1:]:
        starter.start(comp, node.command(comp, bins, node_layout))
    starter.wait(f"{NODE_NAME} to register", lambda: realnode.node_registered(client), timeout)
    if gpus:
        realnode.advertise_gpus(client, gpus)


def _start(
    name: str,
    directory: Path,
    shape: NodeShape,
    timeout: float,
    progress: Progress,
    die_with_parent: bool,
    node_gpus: int = 0,
) -> ClusterInfo:
    t0 = time.monotonic()

    def step(message: str) -> None:
        progress(f"  {message} ({time.monotonic() - t0:.1f}s)")

    bins = locate(CONTROL_PLANE + NODE if shape.real_node else CONTROL_PLANE)
    layout = Layout(directory)
    directory.mkdir(mode=0o700, parents=True)
    pki = make_pki(layout.pki_dir, name)
    names = port_names(shape.real_node)
    ports = dict(zip(names, processes.free_ports(len(names)), strict=True))
    server = f"https://127.0.0.1:{ports['kube-apiserver']}"
    manifests = node_manifests(shape)
    state = ClusterState(
        name=name,
        server=server,
        token=pki.admin_token,
        ports=ports,
        nodes=[m["metadata"]["name"] for m in manifests] + ([NODE_NAME] if shape.real_node else []),
    )
    save(layout.state_file, state)
    node_layout = NodeLayout(directory, name)
    node_pki: NodePki | None = None
    if shape.real_node:
        node_pki = _prepare_node(state, layout, node_layout, bins, pki)
        step(f"bridge {node.BRIDGE} at {NODE_IP}, node files written")
    write_kubeconfig(
        layout.kubeconfig,
        render_kubeconfig(name, server, pki.ca_cert.read_bytes(), pki.admin_token),
    )
    layout.stages.write_text(render_stages(build_stages(bins.kwok_module)))
    cluster_info = _info(state, directory)
    starter = _Starter(state, layout, pki.ca_cert, die_with_parent)

    etcd = starter.start("etcd", command("etcd", bins, layout, pki, ports))
    starter.wait_healthy(etcd, timeout)
    step("etcd healthy")
    apiserver = starter.start(
        "kube-apiserver", command("kube-apiserver", bins, layout, pki, ports, node_pki)
    )
    starter.wait_healthy(apiserver, timeout)
    step(f"kube-apiserver ready at {server}")
    for comp in COMPONENTS[2:]:
        starter.start(comp, command(comp, bins, layout, pki, ports))
    with api_client(cluster_info) as client:
        _create_nodes(client, manifests)
        if shape.real_node:
            _start_node(starter, bins, node_layout, client, node_gpus, timeout)
            step(f"{NODE_NAME} registered")
        starter.wait(
            "the default ServiceAccount",
            lambda: (
                client.get("/api/v1/namespaces/default/serviceaccounts/default").status_code == 200
            ),
            timeout,
        )
        step("default ServiceAccount exists")
        starter.wait(
            f"nodes {', '.join(state.nodes)} to be Ready",
            lambda: _nodes_ready(client, state.nodes),
            timeout,
        )
        step(f"{len(state.nodes)} nodes Ready")
    for rec in state.components[2:]:
        starter.wait_healthy(rec, timeout)
    return cluster_info


def _reclaim_abandoned_node(directory: Path, progress: Progress) -> None:
    """Tear down a real node whose cluster's processes all died (a killed session, a lost
    machine-wide kill): its bridge, mounts and cgroups would block every later real node
    until someone ran `down` by hand. A node with any process alive is left to its owner."""
    owner = realnode.owner_state_dir()
    if owner is None or owner.resolve() == directory.resolve() or not netsetup.bridge_exists():
        return
    state_file = Layout(owner).state_file
    if not state_file.exists():
        _reclaim_orphaned_node(owner, progress)
        return
    with _locked(owner):
        state = load(state_file)
        if state is None or not state.real_node:
            return
        if any(processes.is_alive(c.process) for c in state.components):
            return
        progress(
            f"the real node of cluster {state.name} ({owner}) outlived all its processes; "
            "removing it"
        )
        _teardown(owner)


def _reclaim_orphaned_node(owner: Path, progress: Progress) -> None:
    """The real node of a cluster whose state dir is gone (deleted with the node's processes
    dead: pytest keeps only its last few temp dirs). No PIDs are recorded any more, so the
    node counts as dead when no process mentions its state dir; its host records are in the
    /run dir (`NodeLayout.host_dirs_record`), so the teardown is whole."""
    # Every component names a file in the state dir (`--data-dir=STATE/etcd`,
    # `--config=STATE/node/kubelet.yaml`); the trailing slash keeps `STATE-2` from matching.
    # Shims and pods name only the /run dir: they are the node's leftovers, which the teardown
    # stops.
    if hostres.processes_mentioning(f"{owner}/"):
        return
    layout = NodeLayout(owner, owner.name)
    progress(
        f"the real node of the cluster in {owner} outlived its processes and its state dir; "
        "removing it"
    )
    realnode.teardown(layout, [])
    shutil.rmtree(owner, ignore_errors=True)


def up(
    name: str = DEFAULT_NAME,
    cpu_nodes: int = 2,
    gpu_nodes: int = 2,
    gpus_per_node: int = 8,
    *,
    real_node: bool = False,
    node_gpus: int = 4,
    clusters_dir: Path | None = None,
    timeout: float = 120.0,
    progress: Progress = _stderr,
    die_with_parent: bool = False,
) -> ClusterInfo:
    """Start cluster `name` and wait until the default ServiceAccount exists and all nodes are
    Ready. If it is already running and healthy, say so and return it unchanged.

    `real_node=True` adds the real node (one per machine), advertising `node_gpus`
    nvidia.com/gpu. `die_with_parent=True` ties the components' lives to the calling thread
    (test fixtures); the CLI leaves them running in the background."""
    shape = NodeShape(
        cpu_nodes=cpu_nodes, gpu_nodes=gpu_nodes, gpus_per_node=gpus_per_node, real_node=real_node
    )
    directory = cluster_dir(name, clusters_dir)
    with _locked(directory):
        existing = load(Layout(directory).state_file)
        if existing is not None:
            # Judge the control plane only: a process attached later (attach_process) that
            # died does not make the cluster itself unusable.
            own = COMPONENTS + NODE_COMPONENTS
            core = [c for c in status(name, clusters_dir).components if c.name in own]
            if all(c.healthy for c in core):
                progress(f"cluster {name} is already running")
                return _info(existing, directory)
            broken = ", ".join(c.name for c in core if not c.healthy)
            raise ClusterError(
                f"cluster {name} exists but is not healthy (unhealthy: {broken}). "
                f"See `kuberunner dev cluster status --name {name}`, then remove it with "
                f"`kuberunner dev cluster down --name {name}`."
            )
        if directory.exists():  # an earlier `up` died before recording anything
            shutil.rmtree(directory)
        if real_node:
            _reclaim_abandoned_node(directory, progress)
        began = time.monotonic()
        progress(f"starting cluster {name} in {directory}")
        try:
            started = _start(name, directory, shape, timeout, progress, die_with_parent, node_gpus)
        except BaseException:
            _teardown(directory)
            raise
        progress(f"cluster {name} is up ({time.monotonic() - began:.1f}s)")
        return started


def _teardown(directory: Path) -> None:
    state = load(Layout(directory).state_file)
    node_error: ClusterError | None = None
    if state is not None and state.real_node:
        try:
            realnode.teardown(NodeLayout(directory, state.name), state.components)
        except ClusterError as exc:  # stop the control plane anyway; keep the state to retry
            node_error = exc
    if state is not None:
        # Clients first, etcd last: an apiserver that loses etcd hangs in shutdown, and etcd
        # waits for the apiserver's watch streams to close.
        comps = state.components
        processes.stop([c.process for c in comps if c.name not in LAST_TO_STOP])
        for last in LAST_TO_STOP:
            processes.stop([c.process for c in comps if c.name == last])
    if node_error is not None:
        raise ClusterError(f"{node_error}; the state in {directory} is kept: run down again")
    shutil.rmtree(directory, ignore_errors=True)


def down(
    name: str = DEFAULT_NAME, *, clusters_dir: Path | None = None, progress: Progress = _stderr
) -> bool:
    """Stop every component of cluster `name` by PID and remove its state. False if absent."""
    directory = cluster_dir(name, clusters_dir)
    with _locked(directory):
        if not directory.exists():
            progress(f"cluster {name} is not running")
            return False
        _teardown(directory)
    progress(f"cluster {name} stopped and removed")
    return True


def info(name: str = DEFAULT_NAME, clusters_dir: Path | None = None) -> ClusterInfo:
    """Connection details of an existing cluster (raises ClusterError if there is none)."""
    directory = cluster_dir(name, clusters_dir)
    state = load(Layout(directory).state_file)
    if state is None:
        raise ClusterError(
            f"cluster {name} does not exist; start it with `kuberunner dev cluster up`"
        )
    return _info(state, directory)


def attach_process(
    name: str,
    component: str,
    process: processes.ProcessRef,
    health_url: str,
    log: Path,
    *,
    clusters_dir: Path | None = None,
) -> None:
    """Record an extra process (e.g. a locally run operator) as part of cluster `name`:
    `status` reports it (alive + `health_url`, a plain-HTTP URL), `down` stops it before the
    apiserver. An earlier process attached under the same `component` name is stopped."""
    if component in COMPONENTS + NODE_COMPONENTS:
        raise ClusterError(f"{component!r} is a control-plane component name; choose another")
    directory = cluster_dir(name, clusters_dir)
    layout = Layout(directory)
    with _locked(directory):
        state = load(layout.state_file)
        if state is None:
            raise ClusterError(f"cluster {name} does not exist")
        replaced = [c for c in state.components if c.name == component]
        processes.stop([c.process for c in replaced])
        state.components = [c for c in state.components if c.name != component]
        record_log = log.relative_to(directory) if log.is_relative_to(directory) else log
        state.components.append(
            ComponentRecord(component, process.pid, process.start_time, health_url, str(record_log))
        )
        save(layout.state_file, state)

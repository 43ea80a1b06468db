"""Operator throughput against a bare bulk client, on one local control plane, in one run.

    .venv/bin/python bench/operator_bench.py --services 100 --rounds 3
    .venv/bin/python bench/operator_bench.py --services 1000

Every round runs these phases in this order, each in a namespace of its own. After each, the
namespace is deleted and the bench waits until the API server has served no write for 3 s, so
the controller manager's backlog does not load the next phase.
1. Bulk, twice: the API client the operator uses makes the 3N Deployments and 3N Services that
   N RunnerServices render to (owner references stripped), with `--concurrency` requests in
   flight, first with plain creates (POST, the cheapest way to make an object), then with
   server-side apply (PATCH, what the operator must use). Timed from the first request to the
   last answer.
2. Floor: the writes any server-side-apply operator must make, by a client that does no other
   work: per service, create the RunnerService, apply its 6 children (owned by it) and write its
   first status (`compute_status`, the operator's own function). No watches, no decisions.
   Then again with the RunnerServices created before the clock starts ("floor (backlog)"): what
   an operator catching up on existing services must still write. Then again while the
   client also follows what the operator watches ("floor (watching)"): the RunnerServices, and
   their children and pods through the operator's own informers, with handlers that only
   count the events. Its excess over the floor is what watching alone costs; the operator's
   excess over it is what the operator does with the events.
3. Operator: `kuberunner operator run` watches `bench-op`; timed from the first RunnerService
   create to the moment every RunnerService has `status.observedGeneration` equal to its
   generation and all 6N children exist.
`--rounds R` repeats the phases R times and prints every round and the medians: the times, the
operator's ratio to each baseline (target <= 1.10 against the floor) and its peak RSS (VmHWM;
target <= 200 MB). On stderr, per phase: CPU seconds by program (the whole machine), the writes
the API server served by verb and resource (from its own metrics), and when services got their
status. The cluster has enough CPU nodes for every pod (110 pods each); it is started with
`kuberunner_dev.cluster` and torn down at the end unless `--keep`.

Soak (`--soak R`, instead of the phases above): one operator process, R rounds of churn at N
services (create all, update every spec, delete all; each step timed until done), each round
followed by the floor phase as the cluster's own control, then `--idle` seconds idle. Per
round: the operator's time and CPU per service, its RSS, and its cache counts after the
delete (they must return to 0); then N services are made again and left alone: the idle
window's operator CPU, reconciles and writes (resyncs due meanwhile must write nothing).

    .venv/bin/python bench/operator_bench.py --soak 10 --services 100 --idle 600
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from kuberunner_dev.cluster import ClusterInfo, down, up
from kuberunner_dev.cluster.components import APISERVER_PROFILING_ENV
from kuberunner_operator.handlers import CHILD_SOURCES, POD_SOURCE
from kuberunner_operator.informer import Informer, Source
from kuberunner_operator.kinds import RUNNER_SERVICE
from kuberunner_operator.kube import ApiError, KubeClient, load_kubeconfig
from kuberunner_operator.render import render_service
from kuberunner_operator.status import Observed, compute_status

REPO = Path(__file__).resolve().parent.parent
CRD = REPO / "crds" / "runnerservices.kuberunner.io.yaml"


def service_spec(index: int, replicas: int) -> dict[str, Any]:
    def runner(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "runnable": "bench.models:Model",
            "supportedResources": ["cpu"],
            "resources": {"cpu": "10m", "memory": "16Mi"},
            "replicas": replicas,
        }

    return {
        "image": "registry.example/bench:1",
        "runners": [runner("encoder"), runner("ranker"), runner(f"head-{index % 7}")],
    }


def bulk_objects(namespace: str, count: int, replicas: int) -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = []
    for i in range(count):
        rendered = render_service(f"svc-{i}", namespace, "0", 1, service_spec(i, replicas))
        for obj in rendered.objects:
            obj = copy.deepcopy(obj)
            # No owner in this namespace: the garbage collector would delete them at once.
            obj["metadata"].pop("ownerReferences", None)
            objs.append(obj)
    return objs


async def ensure_namespace(kube: KubeClient, name: str) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    try:
        await kube.create(body)
    except ApiError as exc:
        if exc.code != 409:
            raise


async def delete_namespace(kube: KubeClient, name: str, timeout: float = 600) -> None:
    await kube.delete("v1", "Namespace", name)
    deadline = time.monotonic() + timeout
    while await kube.get("v1", "Namespace", name) is not None:
        if time.monotonic() > deadline:
            print(f"  namespace {name} still terminating; continuing", file=sys.stderr)
            return
        await asyncio.sleep(1.0)


async def bench_bulk(kube: KubeClient, count: int, replicas: int, verb: str) -> float:
    """Time for the bulk client to make the 6N children with `verb` ("create" or "apply")."""
    ns = f"bench-bulk-{verb}"
    await ensure_namespace(kube, ns)
    objs = bulk_objects(ns, count, replicas)
    send = kube.apply if verb == "apply" else kube.create
    before, cpu_before = await request_counts(kube), cpu_by_program()
    profile_apiserver(f"bulk {verb}")
    start = time.perf_counter()
    await asyncio.gather(*(send(o) for o in objs))
    elapsed = time.perf_counter() - start
    print(f"  bulk {verb}: {len(objs)} objects in {elapsed:.2f}s", file=sys.stderr)
    await report_costs(kube, f"bulk {verb}", before, cpu_before)
    await delete_namespace(kube, ns)
    await settle(kube)
    return elapsed


async def report_costs(
    kube: KubeClient, label: str, requests_before: dict[str, float], cpu_before: dict[str, float]
) -> None:
    """Print a phase's CPU by program and the requests the API server served during it
    (`requests_before` from `request_counts`)."""
    after = await request_counts(kube)
    print(f"  {label}: {cpu_delta(cpu_before, cpu_by_program())}", file=sys.stderr)
    print(f"  {label}: {request_delta(requests_before, after)}", file=sys.stderr)
    print(f"  {label}: {request_delta(requests_before, after, reads=True)}", file=sys.stderr)


def runner_services(ns: str, count: int, replicas: int) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "kuberunner.io/v1alpha1",
            "kind": "RunnerService",
            "metadata": {"name": f"svc-{i}", "namespace": ns},
            "spec": service_spec(i, replicas),
        }
        for i in range(count)
    ]


# What an operator that reports readiness must follow, besides its writes: its RunnerServices
# and, by the operator's own label selector, their children and pods.
WATCHED = (Source(RUNNER_SERVICE.api_version, RUNNER_SERVICE.kind, ""), *CHILD_SOURCES, POD_SOURCE)


async def start_watching(
    kube: KubeClient, ns: str
) -> tuple[list[asyncio.Task[None]], Counter[str]]:
    """The operator's informers on `ns` (list, then watch), with handlers that only count:
    what watching costs the client and the API server, without any decision taken on it.
    Returns once every list is in."""
    events: Counter[str] = Counter()

    def count(event_type: str, obj: dict[str, Any]) -> None:
        events[str(obj.get("kind"))] += 1

    informers = [Informer(kube, source, ns, count) for source in WATCHED]
    tasks = [asyncio.create_task(i.run()) for i in informers]
    await asyncio.gather(*(i.synced.wait() for i in informers))
    return tasks, events


async def bench_floor(
    kube: KubeClient,
    count: int,
    replicas: int,
    *,
    made_before: bool = False,
    watching: bool = False,
) -> float:
    """Time for a client without any other work to make the operator's mandatory writes.
    With `made_before`, the RunnerServices are created before the clock starts (an operator
    catching up on a backlog): only the applies and the status writes are timed. With
    `watching`, the client also follows what the operator watches (`start_watching`)."""
    if made_before:
        ns, label = "bench-floor-backlog", "floor (backlog)"
    elif watching:
        ns, label = "bench-floor-watch", "floor (watching)"
    else:
        ns, label = "bench-floor", "floor"
    await ensure_namespace(kube, ns)
    watches, events = await start_watching(kube, ns) if watching else ([], Counter[str]())

    async def children_and_status(created: dict[str, Any]) -> None:
        meta, spec = created["metadata"], created["spec"]
        rendered = render_service(meta["name"], ns, meta["uid"], meta["generation"], spec)
        await asyncio.gather(*(kube.apply(o) for o in rendered.objects))
        update = compute_status(rendered, meta["generation"], Observed(), None, datetime.now(UTC))
        await kube.patch_status(
            RUNNER_SERVICE.api_version, RUNNER_SERVICE.kind, meta["name"], ns, update.status
        )

    async def one(body: dict[str, Any]) -> None:
        await children_and_status(await kube.create(body))

    bodies = runner_services(ns, count, replicas)
    if made_before:
        made = await asyncio.gather(*(kube.create(b) for b in bodies))
        await settle(kube)
        work = [children_and_status(c) for c in made]
    else:
        work = [one(b) for b in bodies]
    before, cpu_before = await request_counts(kube), cpu_by_program()
    profile_apiserver(label)
    start = time.perf_counter()
    await asyncio.gather(*work)
    elapsed = time.perf_counter() - start
    seen = dict(events)  # inside the timed window only
    for task in watches:
        task.cancel()
    await asyncio.gather(*watches, return_exceptions=True)
    print(f"  {label}: {count} services, {6 * count} children in {elapsed:.2f}s", file=sys.stderr)
    if watching:
        print(f"  {label}: watch events in the window by kind: {seen}", file=sys.stderr)
    await report_costs(kube, label, before, cpu_before)
    await delete_namespace(kube, ns)
    await settle(kube)
    return elapsed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def status_mb(pid: int, field: str) -> float:
    """A memory field of /proc/PID/status (VmHWM: peak RSS, VmRSS: current) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb(pid: int) -> float:
    return status_mb(pid, "VmHWM")


async def children_count(kube: KubeClient, ns: str) -> int:
    sel = "app.kubernetes.io/managed-by=kuberunner"
    deps = await kube.list("apps/v1", "Deployment", ns, label_selector=sel)
    svcs = await kube.list("v1", "Service", ns, label_selector=sel)
    return len(deps) + len(svcs)


def start_operator(
    cluster: ClusterInfo, ns: str, log: Path, connections: int
) -> tuple[subprocess.Popen[bytes], int]:
    health, metrics = free_port(), free_port()
    # Same connection cap as the bulk client: neither side wins by opening more connections.
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "KUBERUNNER_OPERATOR_MAX_CONNECTIONS": str(connections),
    }
    argv = [
        str(REPO / ".venv" / "bin" / "kuberunner"),
        "operator",
        "run",
        f"--namespace={ns}",
        f"--metrics-address=127.0.0.1:{metrics}",
        f"--health-address=127.0.0.1:{health}",
        "--log-format=json",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{health}/readyz").status_code == 200:
                return proc, metrics
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"operator exited; see {log}")
        time.sleep(0.2)
    raise RuntimeError(f"operator not ready; see {log}")


def reconcile_summary(port: int) -> str:
    """Reconcile counts by result and the mean duration, from the operator's /metrics."""
    values = operator_metrics(port)
    count = values.get("kuberunner_operator_reconcile_duration_seconds_count", 0.0)
    total = values.get("kuberunner_operator_reconcile_duration_seconds_sum", 0.0)
    prefix = "kuberunner_operator_reconcile_total{"
    results = ", ".join(
        f"{k[len(prefix) :].split('=')[1].strip(chr(34) + '}')} {v:.0f}"
        for k, v in values.items()
        if k.startswith(prefix)
    )
    mean = total / count if count else 0.0
    return f"reconciles: {results}; mean {mean * 1000:.0f} ms"


def stop_operator(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def bench_operator(kube: KubeClient, ns: str, count: int, replicas: int) -> float:
    services = runner_services(ns, count, replicas)
    # Completion is observed through a watch: polling a list of N services would load the API
    # server the operator competes for. Without a resourceVersion the watch first replays every
    # existing object, so services created before it connects are not missed.
    done: set[str] = set()
    all_done = asyncio.Event()
    finished: list[float] = []  # when each service got its status, for the progress line

    async def follow() -> None:
        while True:
            async for event in kube.watch("kuberunner.io/v1alpha1", "RunnerService", ns):
                obj = event["object"]
                meta = obj["metadata"]
                observed = (obj.get("status") or {}).get("observedGeneration")
                if observed == meta.get("generation") and meta["name"] not in done:
                    done.add(meta["name"])
                    finished.append(time.perf_counter() - start)
                    if len(done) == count:
                        all_done.set()
                        return

    before, cpu_before = await request_counts(kube), cpu_by_program()
    profile_apiserver("operator")
    start = time.perf_counter()
    watcher = asyncio.create_task(follow())
    await asyncio.gather(*(kube.create(s) for s in services))
    created = time.perf_counter() - start
    await all_done.wait()
    elapsed = time.perf_counter() - start
    print(f"  operator: RunnerServices created after {created:.2f}s", file=sys.stderr)
    await watcher
    print(f"  operator: status written at {_quantiles(finished)}", file=sys.stderr)
    await report_costs(kube, "operator", before, cpu_before)
    made = await children_count(kube, ns)
    if made != 6 * count:
        raise RuntimeError(f"status written but only {made} of {6 * count} children exist")
    print(f"  operator: {count} services, {made} children in {elapsed:.2f}s", file=sys.stderr)
    return elapsed


READ_VERBS = frozenset({"GET", "LIST", "WATCH"})


async def request_counts(kube: KubeClient) -> dict[str, float]:
    """Requests the API server has served, by `VERB resource[/subresource]` (its own metrics)."""
    counts: dict[str, float] = {}
    for line in (await kube.get_text("/metrics")).splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(
            part.split("=", 1) for part in line[line.index("{") + 1 : line.rindex("}")].split(",")
        )
        key = f"{labels.get('verb', '').strip(chr(34))} {labels.get('resource', '').strip(chr(34))}"
        sub = labels.get("subresource", '""').strip('"')
        key += f"/{sub}" if sub else ""
        counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def is_read(key: str) -> bool:
    return key.split(" ", 1)[0] in READ_VERBS


async def api_requests(kube: KubeClient) -> dict[str, float]:
    """Mutating requests the API server has served (see `request_counts`)."""
    return {k: v for k, v in (await request_counts(kube)).items() if not is_read(k)}


def request_delta(before: dict[str, float], after: dict[str, float], *, reads: bool = False) -> str:
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after if is_read(k) == reads}
    top = sorted(((v, k) for k, v in delta.items() if v > 0), reverse=True)
    what = "reads" if reads else "writes"
    return f"{sum(v for v, _ in top):.0f} {what}: " + ", ".join(f"{k} {v:.0f}" for v, k in top)


def cpu_by_program() -> dict[str, float]:
    """CPU seconds used so far by every process on the machine, keyed `pid name`, and the
    machine's idle and steal time. `cpu_delta` sums them by program."""
    tick = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        totals[f"{stat.parent.name} {name}"] = (int(fields[11]) + int(fields[12])) / tick
    # All CPUs' idle and steal time: steal is time the hypervisor gave this VM's CPUs to
    # others, the first suspect when the same phase takes different times.
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    totals[MACHINE_IDLE] = (int(fields[4]) + int(fields[5])) / tick
    totals[MACHINE_STEAL] = int(fields[8]) / tick
    return totals


MACHINE_IDLE, MACHINE_STEAL = "- (machine idle)", "- (machine steal)"


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> str:
    """CPU seconds between two `cpu_by_program` snapshots, by program, largest first.
    Processes are matched by pid: a kernel worker's name changes with its work queue."""
    by_program: dict[str, float] = {}
    for key, secs in after.items():
        pid, name = key.split(" ", 1)
        prior = before.get(key)
        if prior is None:  # renamed (matched by pid) or started since `before`
            prior = next((v for k, v in before.items() if k.split(" ", 1)[0] == pid), 0.0)
        by_program[name] = by_program.get(name, 0.0) + secs - prior
    machine = {k.split(" ", 1)[1] for k in (MACHINE_IDLE, MACHINE_STEAL)}
    top = sorted(
        ((v, k) for k, v in by_program.items() if v >= 0.1 and k not in machine), reverse=True
    )[:8]
    idle, steal = (by_program[k.split(" ", 1)[1]] for k in (MACHINE_IDLE, MACHINE_STEAL))
    return (
        "CPU s: "
        + ", ".join(f"{k} {v:.1f}" for v, k in top)
        + f"; machine idle {idle:.1f}, steal {steal:.1f}"
    )


async def settle(kube: KubeClient, quiet: float = 3.0, timeout: float = 300.0) -> None:
    """Wait until the API server serves no writes for `quiet` seconds: the controller manager's
    backlog from the bulk phase (its client is rate-limited) must not load the next phase."""
    deadline = time.monotonic() + timeout
    last = sum((await api_requests(kube)).values())
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = sum((await api_requests(kube)).values())
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            return
    print("  cluster still busy after the bulk phase; measuring anyway", file=sys.stderr)


def _quantiles(times: list[float]) -> str:
    if not times:
        return "-"
    pick = [times[min(len(times) - 1, int(q * len(times)))] for q in (0.0, 0.5, 0.9)]
    return "first {:.2f}s, half {:.2f}s, 90% {:.2f}s, last {:.2f}s".format(*pick, times[-1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kubectl(cluster: ClusterInfo, *args: str) -> None:
    from kuberunner_dev.cluster.binaries import locate

    binary = str(locate(("kubectl",))["kubectl"])
    subprocess.run(
        [binary, f"--kubeconfig={cluster.kubeconfig}", *args], check=True, capture_output=True
    )


async def with_client(cluster: ClusterInfo, concurrency: int, fn: Any) -> Any:
    # The client bounds its requests in flight: every phase gets the same `concurrency`.
    config = load_kubeconfig(str(cluster.kubeconfig))
    async with KubeClient(config, max_connections=concurrency) as kube:
        return await fn(kube)


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy (`pip install py-spy`) sampling the operator until it exits: collapsed stacks
    (one line per stack and its sample count; `flamegraph.pl` or speedscope draw them)."""
    argv = [
        "py-spy",
        "record",
        "--pid",
        str(pid),
        "--rate",
        "200",
        "--format",
        "raw",
        "-o",
        str(out),
    ]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


APISERVER_PROFILE_SECONDS = 20


class ApiServerProfiler:
    """Go CPU profiles of the API server (its /debug/pprof, which the dev cluster turns on only
    when APISERVER_PROFILING_ENV is "1"), one per timed phase, covering the phase's first
    `seconds`: `go tool pprof -top FILE` reads them."""

    def __init__(self, kubeconfig: Path, prefix: str, seconds: int) -> None:
        self.kubeconfig, self.prefix, self.seconds = kubeconfig, prefix, seconds
        self.round = 0
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, label: str) -> None:
        self.wait()  # the API server takes one CPU profile at a time
        out = Path(f"{self.prefix}.{label.replace(' ', '-')}.{self.round + 1}.pprof")
        path = f"/debug/pprof/profile?seconds={self.seconds}"
        argv = ["kubectl", "--kubeconfig", str(self.kubeconfig), "get", "--raw", path]
        with out.open("wb") as sink:
            self.running.append(subprocess.Popen(argv, stdout=sink, stderr=subprocess.DEVNULL))
        print(f"  {label}: API server profile {out}", file=sys.stderr)

    def wait(self) -> None:
        for proc in self.running:
            proc.wait(self.seconds + 60)
        self.running.clear()


API_PROFILER: ApiServerProfiler | None = None


def profile_apiserver(label: str) -> None:
    if API_PROFILER is not None:
        API_PROFILER.start(label)


def operator_round(
    cluster: ClusterInfo,
    n: int,
    reps: int,
    conc: int,
    last: bool,
    keep: bool,
    profile: Path | None = None,
) -> tuple[float, float, float, str, Path]:
    """One operator phase: start it, time it, stop it. Returns time, peak RSS, operator CPU,
    its reconcile summary and its log."""
    ns = "bench-op"
    asyncio.run(with_client(cluster, conc, lambda k: ensure_namespace(k, ns)))
    log = Path(tempfile.mkdtemp(prefix="kr-bench-")) / "operator.log"
    proc, metrics_port = start_operator(cluster, ns, log, conc)
    profiler = None
    try:  # the operator is stopped even when the profiler cannot start
        profiler = start_profiler(proc.pid, profile) if profile is not None else None
        cpu_before = cpu_seconds(proc.pid)
        op = asyncio.run(with_client(cluster, conc, lambda k: bench_operator(k, ns, n, reps)))
        rss = peak_rss_mb(proc.pid)
        cpu = cpu_seconds(proc.pid) - cpu_before
        reconciles = reconcile_summary(metrics_port)
    finally:
        stop_operator(proc)
        if profiler is not None:
            profiler.wait(60)
            print(f"  operator profile: {profile}", file=sys.stderr)
    if not last or keep:  # a later round needs it gone; otherwise the cluster goes away
        asyncio.run(with_client(cluster, conc, lambda k: delete_namespace(k, ns)))
        asyncio.run(with_client(cluster, conc, settle))
    return op, rss, cpu, reconciles, log


PHASES = ("create", "apply", "floor", "backlog", "watch", "operator")


def phase_order(phases: list[str], round_: int) -> list[str]:
    """The bulk phases first, then the floor phases and the operator, in reverse order every
    other round: whatever a phase leaves behind (etcd's growth, the garbage collector's queue)
    then weighs on the floor and on the operator alike across rounds."""
    bulk = [p for p in phases if p in ("create", "apply")]
    rest = [p for p in phases if p not in bulk]
    return bulk + (rest[::-1] if round_ % 2 else rest)


def run(args: argparse.Namespace, cluster: ClusterInfo) -> None:
    kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kubectl(cluster, "wait", "--for=condition=Established", "crd/runnerservices.kuberunner.io")
    n, reps, conc = args.services, args.replicas, args.concurrency

    rows: list[dict[str, float]] = []
    global API_PROFILER
    if args.apiserver_profile:
        API_PROFILER = ApiServerProfiler(
            cluster.kubeconfig, args.apiserver_profile, APISERVER_PROFILE_SECONDS
        )
    for round_ in range(args.rounds):
        print(f"round {round_ + 1} of {args.rounds}", file=sys.stderr)
        if API_PROFILER is not None:
            API_PROFILER.round = round_
        row: dict[str, float] = dict.fromkeys(PHASES, math.nan)
        last = round_ == args.rounds - 1
        cpu, reconciles, log = math.nan, "", Path()
        order = phase_order(args.phases, round_)
        for phase in order:
            if phase in ("create", "apply"):
                row[phase] = asyncio.run(
                    with_client(cluster, conc, lambda k, v=phase: bench_bulk(k, n, reps, v))
                )
            elif phase in ("floor", "backlog", "watch"):
                row[phase] = asyncio.run(
                    with_client(
                        cluster,
                        conc,
                        lambda k, p=phase: bench_floor(
                            k, n, reps, made_before=p == "backlog", watching=p == "watch"
                        ),
                    )
                )
            else:
                profile = Path(f"{args.profile}.{round_ + 1}.folded") if args.profile else None
                row["operator"], row["rss"], cpu, reconciles, log = operator_round(
                    cluster, n, reps, conc, last and phase == order[-1], args.keep, profile
                )
        print(f"  operator CPU {cpu:.1f}s; {reconciles}; log {log}", file=sys.stderr)
        rows.append(row)
        if API_PROFILER is not None:
            API_PROFILER.wait()

    print()
    print(
        "| round | services | bulk create s | bulk apply s | floor s | floor (backlog) s "
        "| floor (watching) s | operator s | ratio to create (<= 1.3) | ratio to apply "
        "| ratio to floor (<= 1.10) | ratio to floor (watching) | watching / floor "
        "| peak RSS MB (<= 200) |"
    )
    print("| --- " * 14 + "|")
    for label, row in [*((str(i + 1), r) for i, r in enumerate(rows)), ("median", median(rows))]:
        op = row["operator"]
        print(
            f"| {label} | {n} | {row['create']:.2f} | {row['apply']:.2f} | {row['floor']:.2f} "
            f"| {row['backlog']:.2f} | {row['watch']:.2f} | {op:.2f} | {op / row['create']:.2f} "
            f"| {op / row['apply']:.2f} | {op / row['floor']:.2f} | {op / row['watch']:.2f} "
            f"| {row['watch'] / row['floor']:.2f} | {row['rss']:.0f} |"
        )
    ratios = [
        f"{name} {statistics.median(r[a] / r[b] for r in rows):.2f}"
        for name, a, b in (
            ("operator / floor", "operator", "floor"),
            ("operator / watching floor", "operator", "watch"),
            ("watching floor / floor", "watch", "floor"),
        )
        if not any(math.isnan(r[a] / r[b]) for r in rows)
    ]
    if ratios:
        print(f"\nmedians of the rounds' ratios: {', '.join(ratios)}")
    mid = median(rows)
    print(
        f"\nmedians / bulk create: floor (any server-side-apply operator) "
        f"{mid['floor'] / mid['create']:.2f}, floor with the RunnerServices made beforehand "
        f"{mid['backlog'] / mid['create']:.2f}, bulk apply {mid['apply'] / mid['create']:.2f}"
    )


def median(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per column median; peak RSS is the largest of all rounds."""
    out = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    out["rss"] = max(r["rss"] for r in rows)
    return out


# --- soak ------------------------------------------------------------------------------------


def operator_metrics(port: int) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line.startswith("kuberunner_operator_"):
            series, value = line.rsplit(" ", 1)
            values[series] = float(value)
    return values


def cached_objects(port: int) -> dict[str, int]:
    prefix = 'kuberunner_operator_cached_objects{kind="'
    return {
        series[len(prefix) : -2]: int(value)
        for series, value in operator_metrics(port).items()
        if series.startswith(prefix)
    }


def current_rss_mb(pid: int) -> float:
    return status_mb(pid, "VmRSS")


def is_ready(body: dict[str, Any]) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


async def wait_observed(
    kube: KubeClient, ns: str, count: int, timeout: float = 0.0, *, ready: bool = False
) -> None:
    """Until `count` RunnerServices of `ns` have status for their generation (and are Ready,
    with `ready`). The default timeout grows with `count`: the controller manager's client
    (20 requests/s by default) makes 1000 services' 3000 pods available in about 12 minutes."""
    timeout = timeout or max(600.0, 1.5 * count)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = await kube.list(RUNNER_SERVICE.api_version, RUNNER_SERVICE.kind, ns)
        done = [
            b
            for b in items
            if (b.get("status") or {}).get("observedGeneration") == b["metadata"]["generation"]
            and (is_ready(b) or not ready)
        ]
        if len(items) == count and len(done) == count:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"services of {ns} not observed after {timeout}s")


async def wait_gone(kube: KubeClient, ns: str, timeout: float = 600) -> None:
    """Until no RunnerService, child or pod of `ns` is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = await kube.list(RUNNER_SERVICE.api_version, RUNNER_SERVICE.kind, ns)
        sel = "app.kubernetes.io/managed-by=kuberunner"
        pods = await kube.list("v1", "Pod", ns, label_selector=sel)
        if not left and not pods and await children_count(kube, ns) == 0:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"services of {ns} not gone after {timeout}s")


CHILD_RESOURCES = ("deployments", "services", "horizontalpodautoscalers", "poddisruptionbudgets")


def operator_resource(key: str) -> bool:
    """`VERB resource[/subresource]` (see `api_requests`) is a write the operator makes: its
    children (not their status, which controllers write) and its RunnerServices."""
    resource, _, sub = key.split(" ", 1)[1].partition("/")
    return (resource in CHILD_RESOURCES and not sub) or resource == "runnerservices"


async def idle_services(kube: KubeClient, ns: str, count: int, replicas: int) -> None:
    """`count` services made and Ready, then 20 s for the HPA controller's first status
    writes (its sync period is 15 s) and the status updates they cause."""
    await asyncio.gather(*(kube.create(s) for s in runner_services(ns, count, replicas)))
    await wait_observed(kube, ns, count, ready=True)
    await asyncio.sleep(20)


async def churn(
    kube: KubeClient, ns: str, count: int, replicas: int, revision: int
) -> dict[str, float]:
    """Create, update and delete `count` services; the seconds until each step was done:
    status for the new generation (create, update; the operator's work), then nothing left
    (delete; the garbage collector's and kwok's)."""
    services = runner_services(ns, count, replicas)
    times: dict[str, float] = {}
    start = time.perf_counter()
    await asyncio.gather(*(kube.create(s) for s in services))
    await wait_observed(kube, ns, count)
    times["create"] = time.perf_counter() - start
    start = time.perf_counter()
    env = [{"op": "add", "path": "/spec/env", "value": [{"name": "REV", "value": str(revision)}]}]
    await asyncio.gather(
        *(
            kube.json_patch(
                RUNNER_SERVICE.api_version,
                RUNNER_SERVICE.kind,
                s["metadata"]["name"],
                ns,
                env,
                field_manager="bench-soak",
            )
            for s in services
        )
    )
    await wait_observed(kube, ns, count)
    times["update"] = time.perf_counter() - start
    start = time.perf_counter()
    await asyncio.gather(
        *(
            kube.delete(RUNNER_SERVICE.api_version, RUNNER_SERVICE.kind, s["metadata"]["name"], ns)
            for s in services
        )
    )
    await wait_gone(kube, ns)
    times["delete"] = time.perf_counter() - start
    return times


def soak(args: argparse.Namespace, cluster: ClusterInfo) -> None:
    kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kubectl(cluster, "wait", "--for=condition=Established", "crd/runnerservices.kuberunner.io")
    n, reps, conc, ns = args.services, args.replicas, args.concurrency, "bench-soak"
    idle_n = args.idle_services or n
    asyncio.run(with_client(cluster, conc, lambda k: ensure_namespace(k, ns)))
    log = Path(tempfile.mkdtemp(prefix="kr-soak-")) / "operator.log"
    proc, port = start_operator(cluster, ns, log, conc)
    rss_start = current_rss_mb(proc.pid)  # watching, with nothing to manage yet
    rows: list[dict[str, float]] = []
    try:
        # Warm-up, not measured: the garbage collector learns of the new CRD's resources by
        # periodic discovery, and until then leaves the first deleted services' children (up
        # to ~40 s). One service made and deleted takes that wait out of round 1.
        asyncio.run(with_client(cluster, conc, lambda k: churn(k, ns, 1, reps, 0)))
        for round_ in range(args.soak):
            cpu_before = cpu_seconds(proc.pid)
            steps = asyncio.run(
                with_client(cluster, conc, lambda k, r=round_: churn(k, ns, n, reps, r + 1))
            )
            cpu = cpu_seconds(proc.pid) - cpu_before
            # Every object is gone from the cluster: the cache must follow within seconds (the
            # gauge is published by the operator's heartbeat).
            deadline = time.monotonic() + 15
            cache = cached_objects(port)
            while sum(cache.values()) and time.monotonic() < deadline:
                time.sleep(0.5)
                cache = cached_objects(port)
            floor = asyncio.run(with_client(cluster, conc, lambda k: bench_floor(k, n, reps)))
            rows.append(
                {
                    "round": round_ + 1,
                    "seconds": sum(steps.values()),
                    **{f"{step}_s": t for step, t in steps.items()},
                    "cpu_ms_per_service": 1000 * cpu / n,
                    "rss": current_rss_mb(proc.pid),
                    "cached": float(sum(cache.values())),
                    "floor": floor,
                }
            )
            print(f"  round {round_ + 1}: {rows[-1]} cache {cache}", file=sys.stderr)
        # Idle with N Ready services in place: the resyncs due meanwhile must write nothing.
        asyncio.run(with_client(cluster, conc, lambda k: idle_services(k, ns, idle_n, reps)))
        before = operator_metrics(port)
        writes_before = asyncio.run(with_client(cluster, conc, api_requests))
        cpu_before = cpu_seconds(proc.pid)
        time.sleep(args.idle)
        idle_cpu = cpu_seconds(proc.pid) - cpu_before
        rss, peak = current_rss_mb(proc.pid), peak_rss_mb(proc.pid)
        after = operator_metrics(port)
        writes_after = asyncio.run(with_client(cluster, conc, api_requests))
    finally:
        stop_operator(proc)
        if args.keep:  # otherwise the cluster, and all in it, goes away with `down`
            asyncio.run(with_client(cluster, conc, lambda k: delete_namespace(k, ns)))

    def counted(prefix: str) -> float:
        return sum(after[k] - before.get(k, 0.0) for k in after if k.startswith(prefix))

    reconciles = counted("kuberunner_operator_reconcile_total{")
    resyncs = {
        outcome: counted(f'kuberunner_operator_resync_total{{outcome="{outcome}"}}')
        for outcome in ("unchanged", "applied")
    }
    ours = {
        k: v - writes_before.get(k, 0.0)
        for k, v in writes_after.items()
        if operator_resource(k) and v != writes_before.get(k, 0.0)
    }
    if rows:
        print_rounds(rows)
    print(
        f"idle {args.idle:g} s with {idle_n} services: operator CPU "
        f"{100 * idle_cpu / args.idle:.2f}% of a core (target < 2%), {reconciles:g} reconciles, "
        f"resyncs {resyncs['unchanged']:g} unchanged and {resyncs['applied']:g} applied, "
        f"operator-resource writes {ours or 0} (target 0); RSS {rss:.0f} MB (at start "
        f"{rss_start:.0f} MB: {1024 * (rss - rss_start) / idle_n:.0f} KB per service), "
        f"peak {peak:.0f} MB"
    )
    if args.json:
        result = {
            "rounds": rows,
            "rss_growth_after_round_3_mb": rss_growth(rows),
            "idle_cpu_percent": 100 * idle_cpu / args.idle,
            "idle_reconciles": reconciles,
            "idle_resyncs": resyncs,
            "idle_writes": ours,
            "rss_mb": rss,
            "rss_start_mb": rss_start,
            "peak_rss_mb": peak,
        }
        Path(args.json).write_text(json.dumps(result, indent=1))


def rss_growth(rows: list[dict[str, float]]) -> float:
    """RSS growth after round 3 (or the last round, when fewer), in MB."""
    if not rows:
        return 0.0
    base = min(3, len(rows)) - 1
    return max(r["rss"] for r in rows[base:]) - rows[base]["rss"]


def print_rounds(rows: list[dict[str, float]]) -> None:
    print()
    print(
        "| round | churn s | create s | update s | delete s | operator CPU ms/service | RSS MB "
        "| cached objects after delete | floor s | (create + update) / floor |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['round']:.0f} | {row['seconds']:.2f} | {row['create_s']:.2f} "
            f"| {row['update_s']:.2f} | {row['delete_s']:.2f} | {row['cpu_ms_per_service']:.1f} "
            f"| {row['rss']:.0f} | {row['cached']:.0f} | {row['floor']:.2f} "
            f"| {(row['create_s'] + row['update_s']) / row['floor']:.2f} |"
        )
    first, last = rows[: min(3, len(rows))], rows[-min(3, len(rows)) :]

    def mean(part: list[dict[str, float]], key: str) -> float:
        return statistics.fmean(r[key] for r in part)

    def operator_time(part: list[dict[str, float]]) -> float:
        return mean(part, "create_s") + mean(part, "update_s")

    print(
        f"\nlast 3 rounds / first 3: churn time "
        f"{mean(last, 'seconds') / mean(first, 'seconds'):.2f} (create + update "
        f"{operator_time(last) / operator_time(first):.2f})"
        f" (floor {mean(last, 'floor') / mean(first, 'floor'):.2f}), CPU per service "
        f"{mean(last, 'cpu_ms_per_service') / mean(first, 'cpu_ms_per_service'):.2f} "
        f"(target <= 1.10); RSS growth after round 3: {rss_growth(rows):.1f} MB (target < 10); "
        f"cached objects after every delete: {sorted({int(r['cached']) for r in rows})} "
        f"(target [0])"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=100, help="RunnerServices (3 runners each)")
    parser.add_argument("--replicas", type=int, default=1, help="replicas per runner")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (bulk)")
    parser.add_argument("--cluster", default="bench", help="dev cluster name")
    parser.add_argument("--rounds", type=int, default=1, help="repeat all phases; show medians")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    parser.add_argument(
        "--soak", type=int, help="run R soak rounds instead (0: only the idle window)"
    )
    parser.add_argument("--idle", type=float, default=600.0, help="idle seconds after a soak")
    parser.add_argument(
        "--idle-services", type=int, help="services in the soak's idle window (default: N)"
    )
    parser.add_argument(
        "--phases",
        type=lambda v: [p for p in v.split(",") if p],
        default=list(PHASES),
        help=f"comma-separated subset of {','.join(PHASES)} (default: all)",
    )
    parser.add_argument("--profile", help="py-spy flame graph of the operator: PREFIX.R.folded")
    parser.add_argument(
        "--apiserver-profile",
        help=f"Go CPU profile of the API server over each phase's first "
        f"{APISERVER_PROFILE_SECONDS} s: PREFIX.PHASE.R.pprof",
    )
    parser.add_argument("--json", help="also write the soak's figures to this file")
    args = parser.parse_args()
    clusters_dir = Path(tempfile.gettempdir()) / "kuberunner-bench-clusters"
    # Room for every pod (110 per node): Pending pods would add scheduler retries and events.
    services = max(args.services, args.idle_services or 0)
    cpu_nodes = max(2, math.ceil(3 * services * args.replicas / 100))
    if args.apiserver_profile:
        os.environ[APISERVER_PROFILING_ENV] = "1"
    cluster = up(args.cluster, cpu_nodes=cpu_nodes, clusters_dir=clusters_dir)
    try:
        soak(args, cluster) if args.soak is not None else run(args, cluster)
    finally:
        if not args.keep:
            down(args.cluster, clusters_dir=clusters_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

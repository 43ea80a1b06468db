"""Runner server benchmark: kuberunner against today's peers and the ceiling of its own HTTP stack.

Run: ``.venv/bin/python bench/runner_bench.py`` (see bench/README.md). One command measures:

- kuberunner's runner server (``kuberunner runner serve``, one worker), ``.npy`` and JSON bodies;
- the ceiling: a bare ASGI app on the same uvicorn/uvloop/httptools configuration that reads the
  body and answers the same bytes (``bench/peers/ceiling.py``), ``.npy`` and JSON;
- the API-server hop: ``kuberunner api serve`` calling that runner over HTTP (JSON in and out);
- BentoML 1.2.20's runner server (its pickle-5 payload protocol), BentoML 1.4's batchable
  ``@bentoml.api``, LitServe (default queue and ``fast_queue``), Ray Serve (``@serve.batch``),
  each with JSON bodies, each in a venv of its own that the bench creates when missing;
- two workers against one, for a runnable whose 2 ms are spun on the CPU (and the ceiling with
  one and two processes).

Every server does the same work: each row doubled, 2 ms per batch, max batch 100, one worker,
127.0.0.1; load from ``wrk`` (closed loop). The bench holds ``/tmp/kuberunner-bench.lock``
while it starts servers and measures (one group at a time), so it never overlaps another
engineer's measurement that takes the same lock.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / "peers"
sys.path.insert(0, str(ROOT / "tests" / "oracle"))
from oracle_venv import ensure_oracle_venv  # type: ignore[import-not-found]  # noqa: E402

CONNECTIONS = (1, 8, 32, 128)
WORK_MS = 2.0
ROWS = np.ones((1, 16), dtype=np.float32)
LOCK = Path("/tmp/kuberunner-bench.lock")
PEER_CACHE = Path.home() / ".cache" / "kuberunner" / "peers"
NPY = "application/x-kuberunner-npy"
JSON_TYPE = "application/json"

# Each peer's venv: directory name (keyed by version) and the exact pins, verified to install
# and run here (Python 3.11). numpy is pinned where the peer does not bring it itself.
PEER_VENVS: dict[str, tuple[str, tuple[str, ...]]] = {
    "bentoml-1.4": ("bentoml-1.4.40", ("bentoml==1.4.40",)),
    "litserve": ("litserve-0.2.19", ("litserve==0.2.19", "numpy==2.4.6")),
    "ray": ("ray-2.60.0", ("ray[serve]==2.60.0",)),
}

# BentoML 1.2's side: the same work, served by its RunnerAppFactory under uvicorn, which is
# what `bentoml start-runner-server`'s worker process runs (reference section 8.2).
BENTO_SERVICE = """
import time
import bentoml

class Doubler(bentoml.Runnable):
    SUPPORTED_RESOURCES = ("cpu",)
    SUPPORTS_CPU_MULTI_THREADING = False

    @bentoml.Runnable.method(batchable=True, batch_dim=0)
    def __call__(self, x):
        time.sleep(0.002)
        return x * 2

runner = bentoml.Runner(Doubler, name="doubler", max_batch_size=100)
svc = bentoml.Service("bench", runners=[runner])
"""
BENTO_SERVER = """
import os, sys
port = int(sys.argv[1])
prom = os.path.join(os.environ["BENTOML_HOME"], "prometheus_multiproc_dir")
os.makedirs(prom, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = prom
import uvicorn
from bentoml._internal.context import server_context
from bentoml._internal.server.runner_app import RunnerAppFactory
from bento_service import runner
server_context.service_type = "runner"
server_context.service_name = runner.name
server_context.worker_index = 1
app = RunnerAppFactory(runner, worker_index=1)()
config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, workers=1,
                        timeout_keep_alive=1800)
uvicorn.Server(config).run()
"""
BENTO_PAYLOAD = """
import json, sys, numpy as np
from bentoml._internal.runner.container import AutoContainer
p = AutoContainer.to_payload(np.ones((1, 16), dtype=np.float32), 0)
open(sys.argv[1], "wb").write(p.data)
print(json.dumps({"Args-Number": "1", "Payload-Meta": json.dumps(p.meta),
                  "Payload-Container": p.container, "Batch-Size": str(p.batch_size),
                  "Content-Type": "application/octet-stream"}))
"""
LUA = """
local f = assert(io.open("{body}", "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
{headers}
"""


Namespace = argparse.Namespace


class PeerUnavailable(RuntimeError):
    """A peer that could not be installed or started here; the message says why."""


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers
    socket_errors: int  # connect/read/write errors and wrk's 2 s timeouts
    rows_per_batch: float | None  # None: the server tells no batch sizes


@dataclass
class Side:
    """One measured line: a server called with one wire format."""

    name: str
    wire: str
    url: str  # full URL, path included
    script: Path
    batches: Callable[[], tuple[float, float]] | None  # (rows, batches) so far
    external: bool = False  # a peer (not kuberunner, not the ceiling)
    results: dict[int, Result] = field(default_factory=dict)


# --- plumbing --------------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("installing wrk (apt-get)...", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)
    return shutil.which("wrk") or "wrk"


def ensure_peer_venv(peer: str) -> Path:
    """The python of ``peer``'s own venv, created and installed (pinned) when missing."""
    directory, requirements = PEER_VENVS[peer]
    root = PEER_CACHE / directory
    python = root / "bin" / "python"
    marker = root / ".ready"
    wanted = " ".join(requirements)
    PEER_CACHE.mkdir(parents=True, exist_ok=True)
    with (PEER_CACHE / f".{directory}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists() and marker.exists() and marker.read_text().strip() == wanted:
            return python
        print(f"installing {wanted} into {root} ...", file=sys.stderr)
        steps = [
            ([sys.executable, "-m", "venv", "--clear", str(root)], "creating the venv"),
            (
                [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                 *requirements],
                f"pip install {wanted}",
            ),
        ]  # fmt: skip
        for cmd, what in steps:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
            if proc.returncode != 0:
                tail = (proc.stdout + proc.stderr)[-1500:]
                raise PeerUnavailable(f"{what} failed (exit {proc.returncode}): {tail}")
        marker.write_text(wanted + "\n")
        return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def process(cmd: Sequence[str], env: dict[str, str], cwd: Path, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # Children that left the group on their own (Ray's) are stopped by the peer program.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def wait_ready(url: str, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise PeerUnavailable(f"{url} never became ready:\n{log.read_text()[-3000:]}")


def check_answer(url: str, body: Path, headers: dict[str, str], log: Path) -> None:
    """One call before any load: a server that answers errors is not measured."""
    deadline = time.monotonic() + 60
    while True:
        try:
            r = httpx.post(url, content=body.read_bytes(), headers=headers, timeout=30)
        except httpx.HTTPError as exc:
            answer = f"{type(exc).__name__}: {exc}"
        else:
            if r.status_code == 200:
                return
            answer = f"{r.status_code} {r.text[:300]}"
        if time.monotonic() > deadline:
            raise PeerUnavailable(f"{url} answers {answer}\n{log.read_text()[-2000:]}")
        time.sleep(0.5)


@contextlib.contextmanager
def bench_lock(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    with LOCK.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> tuple[float, float, float, int, int]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    errors = sockets = 0
    if match := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        errors = int(match.group(1))
    socket_errors = r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
    if match := re.search(socket_errors, output):
        sockets = sum(int(g) for g in match.groups())
    return rps, p50, p99, errors, sockets


def metric_batches(base: str, metric: str) -> Callable[[], tuple[float, float]]:
    """(rows, batches) from a Prometheus histogram of batch sizes."""

    def read() -> tuple[float, float]:
        text = httpx.get(base + "/metrics", timeout=10).text
        total = count = 0.0
        for line in text.splitlines():
            if line.startswith(metric + "_sum{"):
                total += float(line.rsplit(" ", 1)[1])
            elif line.startswith(metric + "_count{"):
                count += float(line.rsplit(" ", 1)[1])
        return total, count

    return read


def file_batches(path: Path) -> Callable[[], tuple[float, float]]:
    """(rows, batches) from the counts a peer program writes (bench/peers/peer_stats.py)."""

    def read() -> tuple[float, float]:
        time.sleep(0.45)  # the writer runs five times a second
        try:
            counts = json.loads(path.read_text())
        except (OSError, ValueError):
            return 0.0, 0.0
        return float(counts["rows"]), float(counts["batches"])

    return read


def measure(wrk: str, side: Side, connections: int, seconds: float) -> Result:
    before = side.batches() if side.batches else (0.0, 0.0)
    out = subprocess.run(
        [
            wrk, f"-t{min(2, connections)}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--latency", "-s", str(side.script), side.url,
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed: {out.stdout}{out.stderr}")
    rps, p50, p99, errors, sockets = parse_wrk(out.stdout)
    rows_per_batch = None
    if side.batches:
        after = side.batches()
        batches = after[1] - before[1]
        rows_per_batch = (after[0] - before[0]) / batches if batches else 0.0
    return Result(rps, p50, p99, errors, sockets, rows_per_batch)


def lua(body: Path, headers: dict[str, str]) -> str:
    lines = "\n".join(f'wrk.headers["{k}"] = {json.dumps(v)}' for k, v in headers.items())
    return LUA.format(body=body, headers=lines)


class Bodies:
    """Request bodies and wrk scripts, written once into the work directory."""

    def __init__(self, work: Path) -> None:
        self.work = work
        buf = io.BytesIO()
        np.save(buf, ROWS, allow_pickle=False)
        self.npy = self._file("rows.npy", buf.getvalue())
        rows = ROWS.tolist()
        self.kr_json = self._file("kuberunner.json", json.dumps({"args": [rows]}).encode())
        self.peer_json = self._file("peer.json", json.dumps({"x": rows}).encode())
        self.api_json = self._file("api.json", json.dumps(rows).encode())
        # What kuberunner answers, which the ceiling answers too.
        answer = io.BytesIO()
        np.save(answer, ROWS * 2, allow_pickle=False)
        self.npy_answer = self._file("answer.npy", answer.getvalue())
        doubled = (ROWS * 2).tolist()
        self.json_answer = self._file("answer.json", json.dumps(doubled, separators=(",", ":")))

    def _file(self, name: str, data: bytes | str) -> Path:
        path = self.work / name
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)
        return path

    def script(self, name: str, body: Path, headers: dict[str, str]) -> Path:
        path = self.work / f"{name}.lua"
        path.write_text(lua(body, headers))
        return path


# --- servers ---------------------------------------------------------------------------------


def _project_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    # This checkout's library first: the venv's editable install may point at another worktree.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "runner_image"), str(PEERS)])
    env.pop("KUBERUNNER_CONFIG_OVERRIDES", None)
    env.pop("KUBERUNNER_BENCH_STATS", None)
    return env


@contextlib.contextmanager
def kuberunner_server(work: Path, workers: int = 1, cpu: bool = False) -> Iterator[str]:
    port = free_port()
    env = _project_env(work)
    env["KUBERUNNER_WORKER_ENV_MAP"] = json.dumps({str(i): {} for i in range(workers)})
    if cpu:
        env["KUBERUNNER_BENCH_CPU_WORK"] = "1"
    cmd = [
        sys.executable, "-m", "kuberunner", "runner", "serve", "bench_runnables:Doubler",
        "--name", "doubler", "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    log = work / f"kuberunner-{workers}w{'-cpu' if cpu else ''}.log"
    url = f"http://127.0.0.1:{port}"
    with process(cmd, env, PEERS, log):
        wait_ready(url + "/readyz", log)
        yield url


@contextlib.contextmanager
def ceiling_server(work: Path, bodies: Bodies, processes: int = 1) -> Iterator[str]:
    port = free_port()
    cmd = [
        sys.executable, str(PEERS / "ceiling.py"), "--port", str(port),
        "--processes", str(processes),
        "--answer", f"{NPY}={bodies.npy_answer}", "--answer", f"{JSON_TYPE}={bodies.json_answer}",
    ]  # fmt: skip
    log = work / f"ceiling-{processes}p.log"
    url = f"http://127.0.0.1:{port}"
    with process(cmd, _project_env(work), PEERS, log):
        wait_ready(url + "/readyz", log)
        yield url


@contextlib.contextmanager
def api_server(work: Path, runner_url: str) -> Iterator[str]:
    port = free_port()
    env = _project_env(work)
    env["KUBERUNNER_RUNNER_MAP"] = json.dumps({"doubler": runner_url})
    cmd = [
        sys.executable, "-m", "kuberunner", "api", "serve", "bench_service:svc",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    log = work / "api-server.log"
    url = f"http://127.0.0.1:{port}"
    with process(cmd, env, PEERS, log):
        wait_ready(url + "/readyz", log)
        yield url


@contextlib.contextmanager
def bentoml12_server(work: Path, bodies: Bodies) -> Iterator[Side]:
    try:
        python, _ = ensure_oracle_venv()
    except Exception as exc:
        raise PeerUnavailable(f"BentoML 1.2.20 venv: {exc}") from exc
    (work / "bento_service.py").write_text(BENTO_SERVICE)
    (work / "bento_server.py").write_text(BENTO_SERVER)
    (work / "bento_payload.py").write_text(BENTO_PAYLOAD)
    body = work / "bentoml.bin"
    headers = json.loads(
        subprocess.run(
            [str(python), "bento_payload.py", str(body)],
            cwd=work, capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[-1]
    )  # fmt: skip
    port = free_port()
    env = dict(os.environ)
    env["BENTOML_HOME"] = str(work / "bentoml-home")
    env["BENTOML_DO_NOT_TRACK"] = "true"
    log = work / "bentoml-1.2.log"
    url = f"http://127.0.0.1:{port}"
    with process([str(python), "bento_server.py", str(port)], env, work, log):
        wait_ready(url + "/readyz", log)
        check_answer(url + "/", body, headers, log)
        script = bodies.script("bentoml-1.2", body, headers)
        batches = metric_batches(url, "bentoml_runner_adaptive_batch_size")
        yield Side("BentoML 1.2.20", "pickle5", url + "/", script, batches, external=True)


@contextlib.contextmanager
def peer_server(work: Path, bodies: Bodies, peer: str, variant: str = "") -> Iterator[Side]:
    """BentoML 1.4, LitServe or Ray Serve, each from bench/peers/ in its own venv."""
    python = ensure_peer_venv(peer)
    port = free_port()
    name = peer + (f"-{variant}" if variant else "")
    stats = work / f"{name}.stats"
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["KUBERUNNER_BENCH_STATS"] = str(stats)
    env["BENTOML_HOME"] = str(work / "bentoml14-home")
    env["BENTOML_DO_NOT_TRACK"] = "true"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    base = f"http://127.0.0.1:{port}"
    if peer == "bentoml-1.4":
        cmd = [
            str(python), "-m", "bentoml", "serve", "bento14_service:Doubler",
            "--host", "127.0.0.1", "--port", str(port),
        ]  # fmt: skip
        ready, url, label = base + "/readyz", base + "/double", "BentoML 1.4.40"
    elif peer == "litserve":
        cmd = [str(python), str(PEERS / "litserve_server.py"), "--port", str(port)]
        if variant == "fast":
            cmd.append("--fast-queue")
        label = "LitServe 0.2.19" + (" fast_queue" if variant == "fast" else "")
        ready, url = base + "/health", base + "/predict"
    elif peer == "ray":
        cmd = [str(python), str(PEERS / "ray_server.py"), "--port", str(port)]
        ready, url, label = base + "/-/healthz", base + "/", "Ray Serve 2.60.0"
    else:
        raise ValueError(peer)
    log = work / f"{name}.log"
    headers = {"Content-Type": JSON_TYPE}
    with process(cmd, env, PEERS, log):
        wait_ready(ready, log)
        check_answer(url, bodies.peer_json, headers, log)
        script = bodies.script(name, bodies.peer_json, headers)
        yield Side(label, "json", url, script, file_batches(stats), external=True)


# --- runs ------------------------------------------------------------------------------------


def run_group(wrk: str, sides: list[Side], connections: Sequence[int], args: Namespace) -> None:
    """Warm every side up, then measure level by level, alternating the sides, so drifting
    background load hits them alike."""
    for side in sides:
        measure(wrk, side, 8, args.warmup)
    for c in connections:
        for side in sides:
            r = measure(wrk, side, c, args.duration)
            side.results[c] = r
            print(f"  {side.name:>24} {side.wire:>7} {c:>4} conns: {fmt(r)}", file=sys.stderr)


ALL_PEERS = ("bentoml-1.2", "bentoml-1.4", "litserve", "litserve-fast", "ray")
GROUPS = ("kuberunner", "api", "workers", *ALL_PEERS)


def fmt(r: Result) -> str:
    rows = f"{r.rows_per_batch:.1f}" if r.rows_per_batch is not None else "-"
    return (
        f"{r.rps:8.0f} req/s p50 {r.p50_ms:7.2f} p99 {r.p99_ms:8.2f} ms rows/b {rows} "
        f"n2xx {r.errors} sock {r.socket_errors}"
    )


@dataclass
class Run:
    sides: list[Side] = field(default_factory=list)
    workers: list[Side] = field(default_factory=list)  # the CPU-bound two-worker group
    missing: dict[str, str] = field(default_factory=dict)  # peer -> why it was not measured
    work_ms: float = WORK_MS  # the 2 ms sleep as measured during the kuberunner group


def run_core(wrk: str, work: Path, bodies: Bodies, args: Namespace, run: Run) -> None:
    """kuberunner (npy, JSON), the ceiling (npy, JSON) and the API-server hop, interleaved."""
    want_api = "api" in args.groups
    with bench_lock(args.lock), contextlib.ExitStack() as stack:
        runner = stack.enter_context(kuberunner_server(work))
        ceiling = stack.enter_context(ceiling_server(work, bodies))
        kr_batches = metric_batches(runner, "kuberunner_runner_batch_size")
        npy_headers = {"Content-Type": NPY}
        json_headers = {"Content-Type": JSON_TYPE}
        sides = [
            Side("kuberunner", "npy", runner + "/",
                 bodies.script("kr-npy", bodies.npy, npy_headers), kr_batches),
            Side("kuberunner", "json", runner + "/",
                 bodies.script("kr-json", bodies.kr_json, json_headers), kr_batches),
            Side("ceiling", "npy", ceiling + "/",
                 bodies.script("ceil-npy", bodies.npy, npy_headers), None),
            Side("ceiling", "json", ceiling + "/",
                 bodies.script("ceil-json", bodies.kr_json, json_headers), None),
        ]  # fmt: skip
        if want_api:
            api = stack.enter_context(api_server(work, runner))
            check_answer(api + "/double", bodies.api_json, json_headers, work / "api-server.log")
            script = bodies.script("api-json", bodies.api_json, json_headers)
            sides.append(Side("api server -> kuberunner", "json", api + "/double", script,
                              kr_batches))  # fmt: skip
        run_group(wrk, sides, args.connections, args)
        run.work_ms = measured_work_ms()
    run.sides.extend(sides)


def run_peer(wrk: str, work: Path, bodies: Bodies, args: Namespace, run: Run, peer: str) -> None:
    """One peer alone (idle peers poll: LitServe's workers spin, Ray runs a dozen processes)."""
    try:
        with bench_lock(args.lock), contextlib.ExitStack() as stack:
            if peer == "bentoml-1.2":
                side = stack.enter_context(bentoml12_server(work, bodies))
            elif peer == "litserve-fast":
                side = stack.enter_context(peer_server(work, bodies, "litserve", "fast"))
            else:
                side = stack.enter_context(peer_server(work, bodies, peer))
            run_group(wrk, [side], args.connections, args)
    except Exception as exc:  # a peer that breaks must not cost the rest of the run
        run.missing[peer] = f"{type(exc).__name__}: {exc}".strip()
        print(f"  {peer}: NOT MEASURED: {exc}", file=sys.stderr)
        return
    run.sides.append(side)


def run_workers(wrk: str, work: Path, bodies: Bodies, args: Namespace, run: Run) -> None:
    """CPU-bound work (2 ms spun per batch): one worker against two; the ceiling with one
    process against two. At 128 connections only, ``.npy`` bodies."""
    headers = {"Content-Type": NPY}
    script = bodies.script("workers-npy", bodies.npy, headers)
    with bench_lock(args.lock), contextlib.ExitStack() as stack:
        sides = []
        for workers in (1, 2):
            url = stack.enter_context(kuberunner_server(work, workers=workers, cpu=True))
            batches = metric_batches(url, "kuberunner_runner_batch_size")
            sides.append(Side(f"kuberunner {workers}w cpu", "npy", url + "/", script, batches))
        for processes in (1, 2):
            url = stack.enter_context(ceiling_server(work, bodies, processes))
            sides.append(Side(f"ceiling {processes}p", "npy", url + "/", script, None))
        run_group(wrk, sides, [128], args)
    run.workers.extend(sides)


# --- report ----------------------------------------------------------------------------------


def _ceiling_for(sides: list[Side], side: Side, c: int) -> Result | None:
    wire = "npy" if side.wire in ("npy", "pickle5") else "json"
    for s in sides:
        if s.name == "ceiling" and s.wire == wire:
            return s.results.get(c)
    return None


def table(run: Run, connections: Sequence[int]) -> str:
    head = (
        f"{'conns':>5}  {'server':<30}{'wire':<8}{'req/s':>7}{'p50 ms':>8}{'p99 ms':>9}"
        f"{'rows/b':>7}{'n2xx':>5}{'sock':>5}{'x best peer':>12}{'x ceiling':>10}"
    )
    lines = [head, "-" * len(head)]
    for c in connections:
        here = [s for s in run.sides if c in s.results]
        peers = [s.results[c].rps for s in here if s.external]
        best = max(peers) if peers else None
        for s in here:
            r = s.results[c]
            rows = f"{r.rows_per_batch:.1f}" if r.rows_per_batch is not None else "-"
            vs_peer = f"{r.rps / best:.2f}" if best else "-"
            ceiling = _ceiling_for(run.sides, s, c)
            vs_ceiling = f"{r.rps / ceiling.rps:.2f}" if ceiling else "-"
            lines.append(
                f"{c:>5}  {s.name:<30}{s.wire:<8}{r.rps:>7.0f}{r.p50_ms:>8.2f}{r.p99_ms:>9.2f}"
                f"{rows:>7}{r.errors:>5}{r.socket_errors:>5}{vs_peer:>12}{vs_ceiling:>10}"
            )
        lines.append("")
    return "\n".join(lines)


def _find(run: Run, name: str, wire: str, c: int) -> Result | None:
    for s in run.sides:
        if s.name == name and s.wire == wire:
            return s.results.get(c)
    return None


def measured_work_ms(samples: int = 300) -> float:
    """p50 of ``time.sleep(0.002)`` here and now: the 2 ms of work as the kernel delivers it."""
    took = []
    for _ in range(samples):
        started = time.perf_counter()
        time.sleep(WORK_MS / 1000)
        took.append(time.perf_counter() - started)
    return 1000 * sorted(took)[samples // 2]


def _ok(flag: bool) -> str:
    return "met" if flag else "MISSED"


def verdict(run: Run, work_ms: float) -> list[str]:
    out = []
    for wire in ("npy", "json"):
        for c in (32, 128):
            ours, ceil = _find(run, "kuberunner", wire, c), _find(run, "ceiling", wire, c)
            if ours and ceil:
                ratio = ours.rps / ceil.rps
                out.append(
                    f"{wire:>4} {c:>3} conns: {ratio:.0%} of the ceiling's req/s "
                    f"(>= 85%: {_ok(ratio >= 0.85)})"
                    + (
                        f", p99 {ours.p99_ms:.1f} vs {ceil.p99_ms:.1f} ms "
                        f"({_ok(ours.p99_ms <= ceil.p99_ms)})"
                        if c == 128
                        else ""
                    )
                )
        ours, ceil = _find(run, "kuberunner", wire, 1), _find(run, "ceiling", wire, 1)
        if ours and ceil:
            limit = 1.15 * (WORK_MS + ceil.p50_ms)
            real = 1.15 * (work_ms + ceil.p50_ms)
            out.append(
                f"{wire:>4}   1 conn:  p50 {ours.p50_ms:.2f} ms, limit 1.15 x (2 ms + "
                f"{ceil.p50_ms:.2f}) = {limit:.2f} ms ({_ok(ours.p50_ms <= limit)}); with the "
                f"sleep as measured ({work_ms:.2f} ms) {real:.2f} ms ({_ok(ours.p50_ms <= real)});"
                f" overhead over sleep + ceiling {ours.p50_ms - work_ms - ceil.p50_ms:.2f} ms"
            )
        ours = _find(run, "kuberunner", wire, 128)
        if ours and ours.rows_per_batch:
            cycle = 1000 * ours.rows_per_batch / ours.rps
            # One batch in flight: the requests answered by one batch come back while the next
            # runs and form the one after, so two batches share the connections: C / 2 each.
            allowed = min(100, 128 / 2)
            out.append(
                f"{wire:>4} 128 conns: {ours.rows_per_batch:.1f} rows per batch of the {allowed:g} "
                f"the arrivals allow ({ours.rows_per_batch / allowed:.0%}), one batch every "
                f"{cycle:.2f} ms ({WORK_MS:g} ms of it work: {WORK_MS / cycle:.0%})"
            )
    hop1, direct1 = (
        _find(run, "api server -> kuberunner", "json", 1),
        _find(run, "kuberunner", "json", 1),
    )
    ceil1 = _find(run, "ceiling", "json", 1)
    if hop1 and direct1 and ceil1:
        added = hop1.p50_ms - direct1.p50_ms
        out.append(
            f"API hop, 1 conn: adds {added:.2f} ms at p50 (<= 0.5 x ceiling p50 = "
            f"{0.5 * ceil1.p50_ms:.2f} ms: {_ok(added <= 0.5 * ceil1.p50_ms)})"
        )
    hop, direct = (
        _find(run, "api server -> kuberunner", "json", 128),
        _find(run, "kuberunner", "json", 128),
    )
    if hop and direct:
        loss = 1 - hop.rps / direct.rps
        out.append(
            f"API hop, 128 conns: {hop.rps:.0f} vs {direct.rps:.0f} req/s direct, loses "
            f"{loss:.0%} (<= 15%: {_ok(loss <= 0.15)})"
        )
    by_name = {s.name: s.results.get(128) for s in run.workers}
    one, two = by_name.get("kuberunner 1w cpu"), by_name.get("kuberunner 2w cpu")
    c1, c2 = by_name.get("ceiling 1p"), by_name.get("ceiling 2p")
    if one and two:
        line = (
            f"two workers, CPU-bound, 128 conns: {two.rps:.0f} vs {one.rps:.0f} req/s = "
            f"{two.rps / one.rps:.2f}x (>= 1.7x: {_ok(two.rps / one.rps >= 1.7)})"
        )
        if c1 and c2:
            line += (
                f"; ceiling 2 vs 1 process: {c2.rps:.0f} vs {c1.rps:.0f} = {c2.rps / c1.rps:.2f}x"
            )
        out.append(line)
    return out


def workers_table(run: Run) -> str:
    lines = []
    for s in run.workers:
        r = s.results.get(128)
        if r:
            lines.append(f"  {s.name:<22} 128 conns: {fmt(r)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--duration", type=float, default=6.0, help="seconds per level")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--connections", type=int, nargs="+", default=list(CONNECTIONS))
    p.add_argument(
        "--only",
        dest="groups",
        nargs="+",
        choices=GROUPS,
        default=list(GROUPS),
        help="groups to run: kuberunner (with the ceiling), api (the hop, runs with kuberunner), "
        "workers (two-worker CPU-bound), or peers; default: all",
    )
    p.add_argument(
        "--no-lock", dest="lock", action="store_false", help=f"do not take {LOCK} while measuring"
    )
    args = p.parse_args(argv)
    wrk = ensure_wrk()
    run = Run()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kuberunner-bench-") as tmp:
        work = Path(tmp)
        bodies = Bodies(work)
        if "kuberunner" in args.groups or "api" in args.groups:
            run_core(wrk, work, bodies, args, run)
        for peer in ALL_PEERS:
            if peer in args.groups:
                run_peer(wrk, work, bodies, args, run, peer)
        if "workers" in args.groups:
            run_workers(wrk, work, bodies, args, run)
    load = os.getloadavg()
    print(
        f"\neach row doubled, 2 ms of work per batch (sleep), max batch 100, one worker; wrk "
        f"closed loop, {args.duration:g} s per level; {os.cpu_count()} CPUs; load average "
        f"after the run {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"{time.monotonic() - started:.0f} s in all\n"
    )
    print(table(run, args.connections))
    for peer, why in run.missing.items():
        first = why.splitlines()[0] if why else "unknown"
        print(f"NOT MEASURED: {peer}: {first}")
    if run.workers:
        print("\ntwo workers, 2 ms spun on the CPU per batch (.npy):")
        print(workers_table(run))
    print()
    print("\n".join(verdict(run, run.work_ms)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Runner server benchmark: kuberunner vs BentoML 1.2.20, same runnable, closed-loop wrk load.

Run: ``.venv/bin/python bench/runner_bench.py`` (see bench/README.md). It installs what it needs:
``wrk`` (Debian package) and BentoML 1.2.20 with ``pydantic<2.8`` in a separate venv under
``~/.cache/kuberunner/oracle/`` (shared with the oracle tests). Both servers run one worker on
127.0.0.1 and serve ``x * 2`` on a (1, 16) float32 array with 2 ms of work per batch
(``time.sleep``), max batch size 100, each called in its own native wire format: kuberunner's
``.npy`` body, BentoML's pickle-5 payload headers plus raw buffer body.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "runnables"
sys.path.insert(0, str(ROOT / "tests" / "oracle"))
from oracle_venv import ensure_oracle_venv  # type: ignore[import-not-found]  # noqa: E402

CONNECTIONS = (1, 8, 32, 128)
WORK_SECONDS = 0.002

# BentoML's side: the same runnable, served by its RunnerAppFactory under uvicorn, which is
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


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers
    socket_errors: int  # connect/read/write errors and wrk's 2 s timeouts
    rows_per_batch: float


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("installing wrk (apt-get)...", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)
    return shutil.which("wrk") or "wrk"


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


def wait_ready(url: str, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} never became ready:\n{log.read_text()[-3000:]}")


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


def batch_totals(url: str, metric: str) -> tuple[float, float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(metric + "_sum{"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith(metric + "_count{"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


def measure(
    wrk: str, url: str, script: Path, connections: int, seconds: float, metric: str
) -> Result:
    rows0, batches0 = batch_totals(url, metric)
    threads = min(2, connections)
    out = subprocess.run(
        [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            url + "/",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed: {out.stdout}{out.stderr}")
    rows1, batches1 = batch_totals(url, metric)
    rps, p50, p99, errors, sockets = parse_wrk(out.stdout)
    batches = batches1 - batches0
    rows_per_batch = (rows1 - rows0) / batches if batches else 0.0
    return Result(rps, p50, p99, errors, sockets, rows_per_batch)


def lua(body: Path, headers: dict[str, str]) -> str:
    lines = "\n".join(f'wrk.headers["{k}"] = {json.dumps(v)}' for k, v in headers.items())
    return LUA.format(body=body, headers=lines)


@dataclass
class Target:
    name: str
    url: str
    script: Path
    metric: str


@contextlib.contextmanager
def kuberunner_server(work: Path) -> Iterator[Target]:
    body = work / "kuberunner.npy"
    buf = io.BytesIO()
    np.save(buf, np.ones((1, 16), dtype=np.float32), allow_pickle=False)
    body.write_bytes(buf.getvalue())
    script = work / "kuberunner.lua"
    script.write_text(lua(body, {"Content-Type": "application/x-kuberunner-npy"}))
    port = free_port()
    env = dict(os.environ)
    # This checkout's library first: the venv's editable install may point at another worktree.
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "runner_image"), str(FIXTURES)])
    env["KUBERUNNER_WORKER_ENV_MAP"] = json.dumps({"0": {}})  # one worker
    env.pop("KUBERUNNER_CONFIG_OVERRIDES", None)
    cmd = [
        sys.executable, "-m", "kuberunner", "runner", "serve", "example_runnables:Doubler",
        "--name", "doubler", "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    log = work / "kuberunner.log"
    url = f"http://127.0.0.1:{port}"
    with process(cmd, env, FIXTURES, log):
        wait_ready(url, log)
        yield Target("kuberunner", url, script, "kuberunner_runner_batch_size")


@contextlib.contextmanager
def bentoml_server(work: Path) -> Iterator[Target]:
    python, _ = ensure_oracle_venv()
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
    script = work / "bentoml.lua"
    script.write_text(lua(body, headers))
    port = free_port()
    env = dict(os.environ)
    env["BENTOML_HOME"] = str(work / "bentoml-home")
    env["BENTOML_DO_NOT_TRACK"] = "true"
    log = work / "bentoml.log"
    url = f"http://127.0.0.1:{port}"
    with process([str(python), "bento_server.py", str(port)], env, work, log):
        wait_ready(url, log)
        yield Target("BentoML", url, script, "bentoml_runner_adaptive_batch_size")


def run_interleaved(
    wrk: str, targets: list[Target], args: argparse.Namespace
) -> dict[str, dict[int, Result]]:
    """Alternate the servers level by level, so drifting background load hits both alike."""
    for t in targets:  # warm-up: first batches and BentoML's optimizer training
        measure(wrk, t.url, t.script, 8, args.warmup, t.metric)
    results: dict[str, dict[int, Result]] = {t.name: {} for t in targets}
    for connections in args.connections:
        for t in targets:
            r = measure(wrk, t.url, t.script, connections, args.duration, t.metric)
            results[t.name][connections] = r
            print(f"  {t.name:>10} {connections:>4} connections: {r}", file=sys.stderr)
    return results


def table(ours: dict[int, Result], theirs: dict[int, Result]) -> str:
    head = (
        f"{'conns':>5} | {'kuberunner req/s':>16} {'p50 ms':>7} {'p99 ms':>7} {'rows/b':>6} "
        f"{'n2xx':>4} {'sock':>4} | {'BentoML req/s':>13} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'rows/b':>6} {'n2xx':>4} {'sock':>4} | {'req/s x':>7} {'p50 x':>6} {'p99 x':>6}"
    )
    lines = [head, "-" * len(head)]
    for c in ours:
        a, b = ours[c], theirs.get(c)
        row = (
            f"{c:>5} | {a.rps:>16.0f} {a.p50_ms:>7.2f} {a.p99_ms:>7.2f} {a.rows_per_batch:>6.1f} "
            f"{a.errors:>4} {a.socket_errors:>4} | "
        )
        if b is None:
            row += "(not run)"
        else:
            row += (
                f"{b.rps:>13.0f} {b.p50_ms:>7.2f} {b.p99_ms:>7.2f} {b.rows_per_batch:>6.1f} "
                f"{b.errors:>4} {b.socket_errors:>4} | {a.rps / b.rps:>7.2f} "
                f"{a.p50_ms / b.p50_ms:>6.2f} {a.p99_ms / b.p99_ms:>6.2f}"
            )
        lines.append(row)
    return "\n".join(lines)


def verdict(ours: dict[int, Result], theirs: dict[int, Result]) -> list[str]:
    out = []
    if 128 in ours and 128 in theirs:
        ratio = ours[128].rps / theirs[128].rps
        p99_ok = ours[128].p99_ms <= theirs[128].p99_ms
        out.append(
            f"target 1: req/s at 128 connections {ratio:.2f}x BentoML (>= 3x: "
            f"{'met' if ratio >= 3 else 'MISSED'}), p99 {ours[128].p99_ms:.2f} vs "
            f"{theirs[128].p99_ms:.2f} ms ({'met' if p99_ok else 'MISSED'})"
        )
    if 1 in ours:
        limit = 1.5 * WORK_SECONDS * 1000
        p50 = ours[1].p50_ms
        out.append(
            f"target 2: p50 at 1 connection {p50:.2f} ms (<= {limit:.1f} ms: "
            f"{'met' if p50 <= limit else 'MISSED'})"
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--connections", type=int, nargs="+", default=list(CONNECTIONS))
    p.add_argument("--only", choices=["kuberunner", "bentoml"], default=None)
    args = p.parse_args(argv)
    wrk = ensure_wrk()
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kuberunner-bench-")))
        targets = []
        if args.only != "bentoml":
            targets.append(stack.enter_context(kuberunner_server(work)))
        if args.only != "kuberunner":
            targets.append(stack.enter_context(bentoml_server(work)))
        results = run_interleaved(wrk, targets, args)
    ours = results.get("kuberunner", {})
    theirs = results.get("BentoML", {})
    load = os.getloadavg()
    print("\nx * 2 on a (1, 16) float32 array, 2 ms of work per batch, max batch 100, one worker;")
    print(f"wrk closed loop, {args.duration:g} s per level; {os.cpu_count()} CPUs, "
          f"load average after the run {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")  # fmt: skip
    if ours and theirs:
        print(table(ours, theirs))
        print()
        print("\n".join(verdict(ours, theirs)))
    else:
        for name, side in (("kuberunner", ours), ("BentoML", theirs)):
            for c, r in side.items():
                print(f"{name} {c:>4} conns: {r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

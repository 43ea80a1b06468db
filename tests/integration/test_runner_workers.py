"""Several workers behind one port: pod-wide readiness, env before import, metrics, restarts,
SIGTERM drain. Probed many times, since the kernel picks which worker answers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from fixtures.runnables.serving import env_map, group_members, run_server, runner_args


def metric_total(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        selector, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in selector for k, v in labels.items()):
            total += float(value)
    return total


def test_readyz_is_pod_wide_while_one_worker_loads_slowly(tmp_path: Path) -> None:
    plan = env_map({"LOAD_SECONDS": "0"}, {"LOAD_SECONDS": "12"})
    args = runner_args("example_runnables:SlowLoader", "slow")
    with run_server(args, tmp_path, {"KUBERUNNER_WORKER_ENV_MAP": plan}) as server:
        server.wait_for("/livez")  # live while loading
        answers: list[int] = []
        calls: list[int] = []
        # A new connection per probe, so the kernel hands them to either worker.
        close = {"connection": "close"}
        with httpx.Client(base_url=server.url, timeout=5) as c:
            # Probe until the fast worker serves calls (and a little longer), well before the
            # slow one can finish: the fast worker alone must never make the pod ready.
            deadline = time.monotonic() + 8
            served_at = None
            while time.monotonic() < deadline and (
                served_at is None or time.monotonic() < served_at + 1
            ):
                answers.append(c.get("/readyz", headers=close).status_code)
                assert c.get("/livez", headers=close).status_code == 200
                calls.append(c.post("/ping", json={}, headers=close).status_code)
                if calls[-1] == 200 and served_at is None:
                    served_at = time.monotonic()
            assert set(answers) == {503}, answers
            # The loaded worker already serves; the loading one says so with 503.
            assert set(calls) <= {200, 503}
            assert 200 in calls
            server.wait_for("/readyz", timeout=60)
            assert {c.get("/readyz", headers=close).status_code for _ in range(50)} == {200}


def test_each_worker_gets_its_env_before_import(tmp_path: Path) -> None:
    plan = env_map(
        {"CUDA_VISIBLE_DEVICES": "0", "OMP_NUM_THREADS": "3"},
        {"CUDA_VISIBLE_DEVICES": "1", "OMP_NUM_THREADS": "5"},
    )
    args = runner_args("example_runnables:Adder", "adder")
    with run_server(args, tmp_path, {"KUBERUNNER_WORKER_ENV_MAP": plan}) as server:
        server.wait_for("/readyz")
        seen: dict[int, dict[str, str | None]] = {}
        calls = 0
        with httpx.Client(base_url=server.url, timeout=5) as c:
            for _ in range(200):
                calls += 1
                # A fresh connection each time, so the kernel spreads them over workers.
                r = httpx.post(server.url + "/env", json={}, headers={"connection": "close"})
                body = r.json()
                seen[body["pid"]] = body["at_import"]
                if len(seen) == 2:
                    break
            assert len(seen) == 2, f"only reached workers {list(seen)}"
            by_index = {env["KUBERUNNER_WORKER_INDEX"]: env for env in seen.values()}
            assert by_index["0"]["CUDA_VISIBLE_DEVICES"] == "0"
            assert by_index["0"]["OMP_NUM_THREADS"] == "3"
            assert by_index["1"]["CUDA_VISIBLE_DEVICES"] == "1"
            assert by_index["1"]["OMP_NUM_THREADS"] == "5"

            # Metrics from any worker cover both: every call above is counted exactly once.
            # A worker counts a call just after sending its answer, so the last count may
            # trail the answer by a moment.
            deadline = time.monotonic() + 5
            while True:
                text = c.get("/metrics").text
                counted = metric_total(
                    text, "kuberunner_runner_requests_total", method="env", code="200"
                )
                if counted == calls or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            counts = [ln for ln in text.splitlines() if ln.startswith("kuberunner_runner_req")]
            assert counted == calls, f"{calls} calls by pids {list(seen)}; /metrics: {counts}"
            texts = {c.get("/metrics", headers={"connection": "close"}).text for _ in range(10)}
            totals = {
                metric_total(t, "kuberunner_runner_requests_total", method="env") for t in texts
            }
            assert totals == {counted}, "every worker must report the same pod-wide count"


def test_worker_plan_from_config_when_no_env_map(tmp_path: Path) -> None:
    overrides = json.dumps({"runners": {"adder": {"resources": {"cpu": 2}}}})
    args = runner_args("example_runnables:Adder", "adder")
    with run_server(args, tmp_path, {"KUBERUNNER_CONFIG_OVERRIDES": overrides}) as server:
        server.wait_for("/readyz")
        pids = set()
        for _ in range(200):
            r = httpx.post(server.url + "/env", json={}, headers={"connection": "close"})
            body = r.json()
            pids.add(body["pid"])
            assert body["at_import"]["CUDA_VISIBLE_DEVICES"] == "-1"  # the strategy's CPU env
            if len(pids) == 2:
                break
        assert len(pids) == 2


def test_metrics_aggregate_in_flight_and_batches_across_workers(tmp_path: Path) -> None:
    plan = env_map({}, {})
    args = runner_args("example_runnables:Adder", "adder")
    with run_server(args, tmp_path, {"KUBERUNNER_WORKER_ENV_MAP": plan}) as server:
        server.wait_for("/readyz")
        done = threading.Event()

        def hang() -> None:
            httpx.post(server.url + "/hang", json={"args": [3]}, timeout=20)
            done.set()

        # Two hanging calls on two connections land on two workers (one busy thread each).
        threads = [threading.Thread(target=hang) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 2.5
        in_flight = 0.0
        while in_flight != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
            text = httpx.get(server.url + "/metrics").text
            in_flight = metric_total(text, "kuberunner_runner_requests_in_flight")
        assert in_flight == 2
        for t in threads:
            t.join()
        # The gauge is published ten times a second (not per request), so allow a few periods.
        deadline = time.monotonic() + 2.5
        while in_flight != 0 and time.monotonic() < deadline:
            time.sleep(0.1)
            text = httpx.get(server.url + "/metrics").text
            in_flight = metric_total(text, "kuberunner_runner_requests_in_flight")
        assert in_flight == 0
        assert (
            metric_total(text, "kuberunner_runner_request_duration_seconds_count", method="hang")
            == 2
        )


def test_killed_worker_is_restarted_and_readiness_comes_back(tmp_path: Path) -> None:
    plan = env_map({}, {})
    args = runner_args("example_runnables:Adder", "adder")
    with run_server(args, tmp_path, {"KUBERUNNER_WORKER_ENV_MAP": plan}) as server:
        server.wait_for("/readyz")
        victim = httpx.post(server.url + "/env", json={}).json()["pid"]
        os.kill(victim, signal.SIGKILL)
        server.wait_for("/readyz", status=503, timeout=10)
        server.wait_for("/readyz", status=200, timeout=60)
        pids = {
            httpx.post(server.url + "/env", json={}, headers={"connection": "close"}).json()["pid"]
            for _ in range(60)
        }
        assert victim not in pids
        members = group_members(server.proc.pid)
        assert len(members) == 3, members  # supervisor + 2 workers, no leftovers


def test_sigterm_drains_in_flight_then_exits_zero(tmp_path: Path) -> None:
    plan = env_map({}, {})
    args = runner_args("example_runnables:Adder", "adder", "--graceful-timeout", "10")
    with run_server(args, tmp_path, {"KUBERUNNER_WORKER_ENV_MAP": plan}) as server:
        server.wait_for("/readyz")
        result: dict[str, object] = {}

        def in_flight() -> None:
            r = httpx.post(server.url + "/hang", json={"args": [2]}, timeout=20)
            result["status"], result["body"] = r.status_code, r.json()

        thread = threading.Thread(target=in_flight)
        thread.start()
        time.sleep(0.7)
        server.signal(signal.SIGTERM)
        time.sleep(0.2)
        with httpx.Client(base_url=server.url, timeout=2) as probe:
            try:
                ready = probe.get("/readyz").status_code
            except httpx.HTTPError:
                ready = None  # a worker already closed its listener: also not ready
            assert ready in (503, None)
        try:
            late = httpx.post(server.url + "/add", json={"args": [1, 2]}, timeout=2).status_code
        except httpx.HTTPError:
            late = None  # refused: every listener is closed
        assert late in (503, None)
        thread.join(timeout=20)
        assert result == {"status": 200, "body": "woke up"}
        assert server.proc.wait(timeout=30) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url + "/livez", timeout=2)
        assert group_members(server.proc.pid) == []
        assert "Traceback" not in server.log()


def test_worker_that_cannot_load_makes_the_server_exit_nonzero(tmp_path: Path) -> None:
    args = runner_args("example_runnables:BrokenLoader", "broken")
    env = {"KUBERUNNER_WORKER_ENV_MAP": env_map({})}
    with run_server(args, tmp_path, env) as server:
        server.wait_for("/livez")
        deadline = time.monotonic() + 120
        while server.proc.poll() is None:
            assert time.monotonic() < deadline, "the supervisor never gave up"
            try:
                answer = httpx.get(server.url + "/readyz", timeout=2).status_code
            except httpx.HTTPError:
                answer = None  # between restarts no worker accepts: a probe times out
            assert answer != 200
            time.sleep(0.2)
        assert server.proc.returncode == 1
        # The last log line names the workers' error: in a pod it is the termination message
        # (FallbackToLogsOnError) that the operator reports with CrashLoopBackOff.
        last = [line for line in server.log().splitlines() if line.strip()][-1]
        assert "giving up" in last
        assert "model file missing" in last, last
        assert group_members(server.proc.pid) == []


def test_sigterm_with_a_call_hanging_past_the_grace_period_still_exits(tmp_path: Path) -> None:
    args = runner_args("example_runnables:Adder", "adder", "--graceful-timeout", "2")
    env = {"KUBERUNNER_WORKER_ENV_MAP": env_map({})}
    with run_server(args, tmp_path, env) as server:
        server.wait_for("/readyz")

        def stuck() -> None:
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(server.url + "/hang", json={"args": [120]}, timeout=60)

        thread = threading.Thread(target=stuck, daemon=True)
        thread.start()
        time.sleep(0.7)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0
        assert time.monotonic() - started < 15  # grace period (2 s) plus margins, not 120 s
        assert group_members(server.proc.pid) == []

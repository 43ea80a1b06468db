"""``kuberunner api serve`` in front of a real runner server: APIs, errors, readiness, metrics."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import httpx
import numpy as np

from fixtures.runnables.serving import env_map, free_port, run_server, runner_args

API = ["api", "serve", "example_service:svc"]


def runner_map(port: int) -> dict[str, str]:
    return {"KUBERUNNER_RUNNER_MAP": json.dumps({"adder": f"http://127.0.0.1:{port}"})}


def test_apis_reach_remote_and_embedded_runners(tmp_path: Path) -> None:
    runner_port = free_port()
    runner = run_server(
        runner_args("example_runnables:Adder", "adder"),
        tmp_path,
        {"KUBERUNNER_WORKER_ENV_MAP": env_map({})},
        port=runner_port,
    )
    with runner as runner_server, run_server(API, tmp_path, runner_map(runner_port)) as api:
        runner_server.wait_for("/readyz")
        api.wait_for("/readyz")
        with httpx.Client(base_url=api.url, timeout=10) as c:
            assert c.post("/add", json={"a": 2, "b": 3}).json() == 5
            assert c.post("/add_sync", json={"a": "x", "b": "y"}).json() == "xy"
            r = c.post("/double", json=[[1.0, 2.0]])
            assert r.json() == [[2.0, 4.0]]
            r = c.post("/fail", json={})
            assert r.status_code == 500
            assert "ValueError: runner said no" in r.json()["error"]
            r = c.post("/add", content=b"{oops", headers={"content-type": "application/json"})
            assert r.status_code == 400
            assert "not valid JSON" in r.json()["error"]
            assert c.post("/nope", json={}).status_code == 404
            assert c.get("/add").status_code == 405
            metrics = c.get("/metrics").text
        assert (
            'kuberunner_api_server_requests_total{api="add",code="200",service="calc"} 1.0'
            in metrics
        )
        assert 'api="fail",code="500"' in metrics
        # The runner saw the API server's calls: its own metrics count them.
        runner_metrics = httpx.get(runner_server.url + "/metrics").text
        assert 'method="add",runner="adder"' in runner_metrics


def test_readiness_follows_the_runner(tmp_path: Path) -> None:
    runner_port = free_port()
    with run_server(API, tmp_path, runner_map(runner_port)) as api:
        api.wait_for("/livez")
        # Nothing listens on the runner's port: 503, never a 500 (BentoML bug 13).
        answer = httpx.get(api.url + "/readyz")
        assert answer.status_code == 503
        assert "adder" in answer.text
        # A call that reaches no runner never ran: 503 with Retry-After, after the handle's
        # retries, and the error says which runner and how many tries.
        r = httpx.post(api.url + "/add", json={"a": 1, "b": 2})
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert "failed to reach runner 'adder'" in r.json()["error"]
        assert "(5 tries)" in r.json()["error"]
        runner = run_server(
            runner_args("example_runnables:SlowLoader", "adder"),
            tmp_path,
            {"KUBERUNNER_WORKER_ENV_MAP": env_map({"LOAD_SECONDS": "2"})},
            port=runner_port,
        )
        with runner as runner_server:
            runner_server.wait_for("/livez")
            assert httpx.get(api.url + "/readyz").status_code == 503  # runner still loading
            runner_server.wait_for("/readyz")
            api.wait_for("/readyz", timeout=10)
            assert runner_server.stop() == 0
        deadline = time.monotonic() + 10
        while httpx.get(api.url + "/readyz").status_code != 503:
            assert time.monotonic() < deadline, "API server stayed ready without its runner"
            time.sleep(0.1)
        assert httpx.get(api.url + "/livez").status_code == 200


def test_missing_runner_address_fails_startup(tmp_path: Path) -> None:
    with run_server(API, tmp_path, {"KUBERUNNER_RUNNER_MAP": "{}"}) as api:
        assert api.proc.wait(timeout=60) != 0
        assert "needs runners ['adder']" in api.log()


def test_npy_body_to_embedded_runner(tmp_path: Path) -> None:
    runner_port = free_port()
    with run_server(API, tmp_path, runner_map(runner_port)) as api:
        api.wait_for("/livez")
        x = np.arange(4, dtype=np.float64).reshape(2, 2)
        buf = io.BytesIO()
        np.save(buf, x)
        r = httpx.post(
            api.url + "/double",
            content=buf.getvalue(),
            headers={"content-type": "application/x-kuberunner-npy"},
        )
        assert r.status_code == 200
        assert r.json() == (x * 2).tolist()

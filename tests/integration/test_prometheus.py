"""A real Prometheus (Debian package) scrapes a real operator and a real runner server.

Prometheus listens on 127.0.0.1 with a temporary storage directory and a 1 s scrape interval. Its
targets: `kuberunner operator run` against the session cluster (reconciling one RunnerService)
and `kuberunner runner serve` that answered some requests. The test reads Prometheus' HTTP API:
the operator's and the runner's series must be ingested with the contract's labels, and the
chart's alert rules must load into this Prometheus.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from test_operator_support import OperatorProcess, install_crd, rsvc, runner

from fixtures.runnables.serving import ServerProcess, env_map, run_server, runner_args
from k8s_helpers import apply, kubectl, wait_for
from kuberunner_dev.cluster import ClusterInfo
from kuberunner_dev.cluster.binaries import locate
from prometheus_helpers import run_prometheus

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kuberunner"
NS_PREFIX = "kr-prom"
RUNNER_TARGET_LABELS = {
    "namespace": "ml",
    "kuberunner_service": "svc",
    "kuberunner_runner": "adder",
}


def chart_rules(tmp: Path) -> Path:
    done = subprocess.run(
        [str(locate(("helm",))["helm"]), "template", "t", str(CHART), "-n", "kr-system",
         "--kube-version", "1.36.2", "--set", "prometheusRule.enabled=true"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (rule,) = [d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "PrometheusRule"]
    path = tmp / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    return path


@pytest.fixture
def operator(cluster: ClusterInfo, tmp_path: Path) -> Iterator[OperatorProcess]:
    install_crd(cluster)
    proc = OperatorProcess(cluster, tmp_path, f"--namespace={NS_PREFIX}-*", name="prom-op")
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def adder(tmp_path: Path) -> Iterator[ServerProcess]:
    args = runner_args("example_runnables:Adder", "adder")
    with run_server(args, tmp_path, {"KUBERUNNER_WORKER_ENV_MAP": env_map({})}) as server:
        server.wait_for("/readyz")
        yield server


def series_labels(result: list[dict[str, Any]]) -> list[dict[str, str]]:
    return sorted((dict(r["metric"]) for r in result), key=lambda m: sorted(m.items()))


def test_prometheus_ingests_operator_and_runner_metrics(
    cluster: ClusterInfo, operator: OperatorProcess, adder: ServerProcess, tmp_path: Path
) -> None:
    # Traffic for the runner: 5 successful calls and 2 that raise in the runnable (500).
    with httpx.Client(base_url=adder.url, timeout=10) as client:
        for i in range(5):
            assert client.post("/add", json={"args": [i, 1]}).json() == i + 1
        for _ in range(2):
            assert client.post("/fail", json={"args": ["boom"]}).status_code == 500
    # Work for the operator: one RunnerService in a watched namespace.
    ns = f"{NS_PREFIX}-{secrets.token_hex(3)}"
    kubectl(cluster, "create", "namespace", ns)
    try:
        apply(cluster, rsvc("prom", [runner("echo")]), namespace=ns)
        wait_for(
            lambda: operator.metric("kuberunner_operator_reconcile_total", 'result="success"') >= 1,
            timeout=60,
            message="a successful reconcile",
        )
        scrape_configs = [
            {
                "job_name": "kuberunner-operator",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{operator.metrics_port}"],
                        "labels": {"namespace": "kr-system"},
                    }
                ],
            },
            {
                "job_name": "kuberunner-runners",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{adder.port}"], "labels": RUNNER_TARGET_LABELS}
                ],
            },
        ]
        with run_prometheus(tmp_path, scrape_configs, chart_rules(tmp_path)) as prom:
            wait_for(
                lambda: len(prom.query('up{job=~"kuberunner-.*"} == 1')) == 2,
                timeout=60,
                message="both targets up",
            )
            reconciles = wait_for(
                lambda: prom.query('kuberunner_operator_reconcile_total{result="success"} > 0'),
                timeout=30,
                message="reconcile_total ingested",
            )
            assert series_labels(reconciles) == [
                {
                    "__name__": "kuberunner_operator_reconcile_total",
                    "instance": f"127.0.0.1:{operator.metrics_port}",
                    "job": "kuberunner-operator",
                    "namespace": "kr-system",
                    "result": "success",
                }
            ]
            results = {
                m["result"]
                for m in series_labels(prom.query("kuberunner_operator_reconcile_total"))
            }
            assert {"success", "error"} <= results
            assert prom.query("kuberunner_operator_reconcile_duration_seconds_count > 0")

            requests = prom.query('kuberunner_runner_requests_total{job="kuberunner-runners"}')
            by_code = {
                (m["metric"]["method"], m["metric"]["code"]): float(m["value"][1]) for m in requests
            }
            assert by_code == {("add", "200"): 5.0, ("fail", "500"): 2.0}
            for labels in series_labels(requests):
                assert labels["runner"] == "adder"
                assert RUNNER_TARGET_LABELS.items() <= labels.items()
            assert prom.query('kuberunner_runner_request_duration_seconds_count{method="add"} == 5')

            # The chart's alert rules load and evaluate in this Prometheus.
            def rule_groups() -> list[dict[str, Any]] | None:
                groups: list[dict[str, Any]] = prom.api("rules")["groups"]
                evaluated = all(
                    r.get("lastEvaluation", "").startswith("2") for g in groups for r in g["rules"]
                )
                return groups if groups and evaluated else None

            groups = wait_for(rule_groups, timeout=30, message="rules evaluated")
            assert {g["name"] for g in groups} == {"kuberunner-operator", "kuberunner-runners"}
            for group in groups:
                for rule in group["rules"]:
                    assert rule["health"] == "ok", rule
    finally:
        kubectl(cluster, "delete", "namespace", ns, "--wait=false", check=False)

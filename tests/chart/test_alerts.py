"""The chart's PrometheusRule and Grafana dashboard, checked with the real promtool.

`promtool check rules` validates the rendered rule groups (PromQL and annotation templates);
`promtool test rules` feeds synthetic series and asserts which alerts fire, with which labels,
and that healthy series fire none. Every dashboard query is parsed by promtool too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kuberunner_dev.cluster.binaries import locate

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kuberunner"
DASHBOARDS = sorted((CHART / "files" / "dashboards").glob("*.json"))

# Metric names the contracts give the operator and the runner server.
KNOWN_METRICS = {
    "kuberunner_operator_reconcile_total",
    "kuberunner_operator_reconcile_duration_seconds",
    "kuberunner_operator_managed_services",
    "kuberunner_operator_leader",
    "kuberunner_runner_requests_total",
    "kuberunner_runner_request_duration_seconds",
    "kuberunner_runner_requests_in_flight",
    "kuberunner_runner_batch_size",
}
OPERATOR = 'job="t-kuberunner-metrics", namespace="kr-system"'
ALERT_LABELS = {"team": "ml-platform"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool missing: run `make system-deps` (Debian package prometheus)")
    return path


def render_rules() -> dict[str, Any]:
    done = subprocess.run(
        [str(locate(("helm",))["helm"]), "template", "t", str(CHART), "-n", "kr-system",
         "--kube-version", "1.36.2", "-f", str(CHART / "ci" / "04-monitoring-values.yaml")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rules = [d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "PrometheusRule"]
    assert len(rules) == 1
    spec: dict[str, Any] = rules[0]["spec"]
    return spec


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_rendered_rules_pass_promtool_check(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(render_rules()))
    done = run_promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 7 rules found" in done.stdout


def test_every_alert_has_severity_summary_and_description() -> None:
    for group in render_rules()["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
            assert rule["labels"]["team"] == "ml-platform", rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]
            assert rule["annotations"]["description"], rule["alert"]


def alert(severity: str, **labels: str) -> dict[str, Any]:
    return {"exp_labels": {"severity": severity, **ALERT_LABELS, **labels}}


def histogram(metric: str, labels: str, per_minute: dict[str, int]) -> list[dict[str, str]]:
    """Cumulative bucket series that grow by `per_minute[le]` each minute."""
    return [
        {"series": f'{metric}_bucket{{{labels}, le="{le}"}}', "values": f"0+{n}x40"}
        for le, n in per_minute.items()
    ]


def test_alerts_fire_on_synthetic_series(tmp_path: Path) -> None:
    rules = render_rules()
    # Alert logic only: annotation text is covered by `promtool check rules` above.
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    slow = 'namespace="ml", kuberunner_service="svc", runner="slow", method="predict"'
    fast = 'namespace="ml", kuberunner_service="svc", runner="fast", method="predict"'
    healthy_operator = {
        "interval": "1m",
        "input_series": [
            {"series": f'up{{{OPERATOR}, instance="a"}}', "values": "1x40"},
            {"series": f'kuberunner_operator_leader{{{OPERATOR}, instance="a"}}', "values": "1x40"},
            {
                "series": f'kuberunner_operator_reconcile_total{{{OPERATOR}, result="error"}}',
                "values": "0+6x40",
            },
            {
                "series": f'kuberunner_operator_reconcile_total{{{OPERATOR}, result="success"}}',
                "values": "0+60x40",
            },
            # Reconciles: all within 0.5 s.
            *histogram(
                "kuberunner_operator_reconcile_duration_seconds",
                OPERATOR,
                {"0.5": 60, "10": 60, "+Inf": 60},
            ),
            # Runner pods: one answers, one does not.
            {
                "series": 'up{namespace="ml", pod="svc-slow-0", kuberunner_service="svc", '
                'kuberunner_runner="slow", job="ml/runners"}',
                "values": "0x40",
            },
            {
                "series": 'up{namespace="ml", pod="svc-fast-0", kuberunner_service="svc", '
                'kuberunner_runner="fast", job="ml/runners", pod_ready="true"}',
                "values": "1x40",
            },
            # ... and one answers /metrics but its pod is not Ready.
            {
                "series": 'up{namespace="ml", pod="svc-fast-1", kuberunner_service="svc", '
                'kuberunner_runner="fast", job="ml/runners", pod_ready="false"}',
                "values": "1x40",
            },
            # "slow" answers in 1-2.5 s with 10 % 5xx; "fast" in under 0.5 s with 1 % 5xx.
            *histogram(
                "kuberunner_runner_request_duration_seconds",
                slow,
                {"0.5": 0, "1": 0, "2.5": 100, "+Inf": 100},
            ),
            *histogram(
                "kuberunner_runner_request_duration_seconds",
                fast,
                {"0.5": 100, "1": 100, "2.5": 100, "+Inf": 100},
            ),
            {
                "series": f'kuberunner_runner_requests_total{{{slow}, code="500"}}',
                "values": "0+10x40",
            },
            {
                "series": f'kuberunner_runner_requests_total{{{slow}, code="200"}}',
                "values": "0+90x40",
            },
            {
                "series": f'kuberunner_runner_requests_total{{{fast}, code="503"}}',
                "values": "0+1x40",
            },
            {
                "series": f'kuberunner_runner_requests_total{{{fast}, code="200"}}',
                "values": "0+99x40",
            },
        ],
        "alert_rule_test": [
            # Pending for `for: 10m` first.
            {"eval_time": "8m", "alertname": "KuberunnerReconcileErrors", "exp_alerts": []},
            {
                "eval_time": "20m",
                "alertname": "KuberunnerReconcileErrors",
                "exp_alerts": [alert("warning", namespace="kr-system", job="t-kuberunner-metrics")],
            },
            {"eval_time": "20m", "alertname": "KuberunnerReconcileSlow", "exp_alerts": []},
            {"eval_time": "20m", "alertname": "KuberunnerOperatorDown", "exp_alerts": []},
            {"eval_time": "20m", "alertname": "KuberunnerOperatorNoLeader", "exp_alerts": []},
            {
                "eval_time": "20m",
                "alertname": "KuberunnerRunnerNotReady",
                "exp_alerts": [
                    alert(
                        "warning",
                        namespace="ml",
                        pod=pod,
                        kuberunner_service="svc",
                        kuberunner_runner=runner,
                    )
                    for pod, runner in (("svc-slow-0", "slow"), ("svc-fast-1", "fast"))
                ],
            },
            {
                "eval_time": "20m",
                "alertname": "KuberunnerRunnerHighLatency",
                "exp_alerts": [
                    alert(
                        "warning",
                        namespace="ml",
                        kuberunner_service="svc",
                        runner="slow",
                        method="predict",
                    )
                ],
            },
            {
                "eval_time": "20m",
                "alertname": "KuberunnerRunnerErrors",
                "exp_alerts": [
                    alert("warning", namespace="ml", kuberunner_service="svc", runner="slow")
                ],
            },
        ],
    }
    broken_operator = {
        "interval": "1m",
        "input_series": [
            # The operator's target is gone; a second install elsewhere has no leader.
            {"series": 'up{job="other", namespace="x", instance="b"}', "values": "1x40"},
            {
                "series": f'kuberunner_operator_leader{{{OPERATOR}, instance="standby"}}',
                "values": "0x40",
            },
            *histogram(
                "kuberunner_operator_reconcile_duration_seconds",
                OPERATOR,
                {"0.5": 0, "10": 0, "30": 10, "+Inf": 10},
            ),
        ],
        "alert_rule_test": [
            {"eval_time": "3m", "alertname": "KuberunnerOperatorDown", "exp_alerts": []},
            {
                "eval_time": "10m",
                "alertname": "KuberunnerOperatorDown",
                "exp_alerts": [
                    alert("critical", namespace="kr-system", job="t-kuberunner-metrics")
                ],
            },
            {
                "eval_time": "10m",
                "alertname": "KuberunnerOperatorNoLeader",
                "exp_alerts": [
                    alert("critical", namespace="kr-system", job="t-kuberunner-metrics")
                ],
            },
            {
                "eval_time": "20m",
                "alertname": "KuberunnerReconcileSlow",
                "exp_alerts": [alert("warning", namespace="kr-system", job="t-kuberunner-metrics")],
            },
        ],
    }
    down_operator = {
        "interval": "1m",
        "input_series": [{"series": f'up{{{OPERATOR}, instance="a"}}', "values": "0x40"}],
        "alert_rule_test": [
            {
                "eval_time": "10m",
                "alertname": "KuberunnerOperatorDown",
                "exp_alerts": [
                    alert("critical", namespace="kr-system", job="t-kuberunner-metrics")
                ],
            },
        ],
    }
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [healthy_operator, broken_operator, down_operator],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    done = run_promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


# --- dashboard ------------------------------------------------------------------------------------


def dashboard_exprs(path: Path) -> list[str]:
    dash = json.loads(path.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_grafana_json_with_variables(path: Path) -> None:
    dash = json.loads(path.read_text())
    assert dash["uid"]
    assert dash["title"].startswith("kuberunner")
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "namespace", "runner"} <= variables
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_queries_parse_and_use_known_metrics(path: Path, tmp_path: Path) -> None:
    exprs = dashboard_exprs(path)
    assert len(exprs) >= 10
    used = set()
    for expr in exprs:
        for name in re.findall(r"\bkuberunner_[a-z_]+(?=\{)", expr):
            used.add(re.sub(r"_(bucket|sum|count)$", "", name))
    assert used <= KNOWN_METRICS, used - KNOWN_METRICS
    assert used == KNOWN_METRICS, f"no panel for {KNOWN_METRICS - used}"
    # Grafana variables replaced by concrete values, each query as a recording rule.
    rules = [
        {
            "record": f"kuberunner:dashboard_query_{i}",
            "expr": expr.replace("$__rate_interval", "5m").replace("$", "x"),
        }
        for i, expr in enumerate(exprs)
    ]
    (tmp_path / "dash.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    done = run_promtool("check", "rules", "dash.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr

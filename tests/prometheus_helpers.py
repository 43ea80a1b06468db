"""A real Prometheus (Debian package) for the tests, and the scrape configs that the Prometheus
Operator would generate from the chart's PodMonitor and ServiceMonitor.

Prometheus listens on 127.0.0.1 with a temporary storage directory and 1 s scrape interval.
The translation follows what the Prometheus Operator documents for its generated jobs: a
`kubernetes_sd_configs` job per monitor endpoint (role `pod` for a PodMonitor, `endpoints` for
a ServiceMonitor), `keep` rules for the selector's labels and the named port, the target labels
`namespace`, `pod`, `container` (and `service`, `endpoint`), then the monitor's own relabelings.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from fixtures.runnables.serving import free_port
from k8s_helpers import wait_for


class Prometheus:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    def api(self, path: str, **params: str) -> Any:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.log_path.read_text()[-3000:]}")
        answer = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=5)
        answer.raise_for_status()
        body = answer.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result


@contextlib.contextmanager
def run_prometheus(
    tmp: Path,
    scrape_configs: list[dict[str, Any]],
    rules: Path | None = None,
    binary: Path | None = None,
) -> Iterator[Prometheus]:
    """Debian's Prometheus unless `binary` is given (Debian's has no Kubernetes discovery: the
    discovery test passes the one hack/build-tools.sh builds)."""
    if binary is None:
        found = shutil.which("prometheus")
        if found is None:
            pytest.fail("prometheus missing: run `make system-deps` (Debian package prometheus)")
        binary = Path(found)
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "evaluation_interval": "1s",
                },
                "rule_files": [str(rules)] if rules else [],
                "scrape_configs": scrape_configs,
            }
        )
    )
    log_path = tmp / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(binary), f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    prom = Prometheus(proc, port, log_path)
    try:
        wait_for(
            lambda: (
                prom.proc.poll() is None
                and httpx.get(f"{prom.url}/-/ready", timeout=2).status_code == 200
            ),
            timeout=60,
            message=f"prometheus ready (log {log_path})",
        )
        yield prom
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def _sanitized(label: str) -> str:
    """A Kubernetes label name as service discovery spells it in a meta label."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def _kubernetes_sd(role: str, namespaces: dict[str, Any], api: dict[str, Any]) -> dict[str, Any]:
    sd: dict[str, Any] = {"role": role, **api}
    if not namespaces.get("any"):
        sd["namespaces"] = {"names": list(namespaces.get("matchNames") or [])}
    return sd


def _keep_labels(prefix: str, match_labels: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {
            "action": "keep",
            "source_labels": [
                f"{prefix}_label_{_sanitized(k)}",
                f"{prefix}_labelpresent_{_sanitized(k)}",
            ],
            "regex": f"({re.escape(v)});true",
        }
        for k, v in sorted(match_labels.items())
    ]


def _monitor_relabelings(relabelings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A monitor's camelCase relabel configs in Prometheus' snake_case."""
    names = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    return [{names.get(k, k): v for k, v in r.items()} for r in relabelings]


def pod_monitor_job(monitor: dict[str, Any], api: dict[str, Any]) -> list[dict[str, Any]]:
    """Scrape configs for a PodMonitor (one per podMetricsEndpoint)."""
    spec, name = monitor["spec"], monitor["metadata"]["name"]
    jobs = []
    for index, endpoint in enumerate(spec["podMetricsEndpoints"]):
        relabel = [
            {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"],
             "regex": "(Failed|Succeeded)"},
            *_keep_labels("__meta_kubernetes_pod", spec["selector"]["matchLabels"]),
            {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
             "regex": re.escape(endpoint["port"])},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"],
             "target_label": "container"},
            {"target_label": "job", "replacement": f"{monitor['metadata']['namespace']}/{name}"},
            *_monitor_relabelings(endpoint.get("relabelings") or []),
        ]  # fmt: skip
        jobs.append(
            {
                "job_name": f"podMonitor/{monitor['metadata']['namespace']}/{name}/{index}",
                "metrics_path": endpoint.get("path", "/metrics"),
                "kubernetes_sd_configs": [_kubernetes_sd("pod", spec["namespaceSelector"], api)],
                "relabel_configs": relabel,
            }
        )
    return jobs


def service_monitor_job(monitor: dict[str, Any], api: dict[str, Any]) -> list[dict[str, Any]]:
    """Scrape configs for a ServiceMonitor (one per endpoint), role `endpoints`."""
    spec, name = monitor["spec"], monitor["metadata"]["name"]
    jobs = []
    for index, endpoint in enumerate(spec["endpoints"]):
        relabel = [
            *_keep_labels("__meta_kubernetes_service", spec["selector"]["matchLabels"]),
            {"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"],
             "regex": re.escape(endpoint["port"])},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"target_label": "endpoint", "replacement": endpoint["port"]},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job"},
            *_monitor_relabelings(endpoint.get("relabelings") or []),
        ]  # fmt: skip
        jobs.append(
            {
                "job_name": f"serviceMonitor/{monitor['metadata']['namespace']}/{name}/{index}",
                "metrics_path": endpoint.get("path", "/metrics"),
                "kubernetes_sd_configs": [
                    _kubernetes_sd("endpoints", spec["namespaceSelector"], api)
                ],
                "relabel_configs": relabel,
            }
        )
    return jobs

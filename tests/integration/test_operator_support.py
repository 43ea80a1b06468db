"""Shared pieces of the operator integration tests (no tests here).

`OperatorProcess` runs the real `kuberunner operator run` as a subprocess against the session
cluster; `install_crd` applies the generated CRD file; the rest builds and reads RunnerServices
through kubectl.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from k8s_helpers import REPO, kubectl, kubectl_json, wait_for
from kuberunner_dev.cluster import ClusterInfo

CRD_FILE = REPO / "crds" / "runnerservices.kuberunner.io.yaml"
CLI = REPO / ".venv" / "bin" / "kuberunner"
# The operator tests judge the operator (children, status, drift, leader election), so they run
# on the session cluster, whose pods kwok simulates: nothing is pulled or started. They still
# name an image and a runnable that exist (the runner image built by hack/build-images.sh, an
# example runnable it ships), so every manifest they make would run as it is on a real node;
# tests/integration/test_real_*.py run runner pods for real.
IMAGE = "localhost/kuberunner-runner:dev"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def install_crd(cluster: ClusterInfo) -> None:
    kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    # Right after creation the CRD has no conditions yet and `kubectl wait` errors out.
    wait_for(
        lambda: (
            kubectl(
                cluster,
                "wait",
                "--for=condition=Established",
                "crd/runnerservices.kuberunner.io",
                "--timeout=10s",
                check=False,
            ).returncode
            == 0
        ),
        timeout=60,
        message="CRD established",
    )


def new_namespace(cluster: ClusterInfo, prefix: str) -> str:
    name = f"{prefix}-{secrets.token_hex(3)}"
    kubectl(cluster, "create", "namespace", name)
    return name


class OperatorProcess:
    """`kuberunner operator run` bound to 127.0.0.1 ports, logging to a file."""

    def __init__(
        self,
        cluster: ClusterInfo,
        log_dir: Path,
        *args: str,
        name: str = "op",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.log_path = log_dir / f"{name}-{self.health_port}.log"
        env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "KUBERUNNER_OPERATOR_DEBOUNCE": "0.2",
            **(env or {}),
        }
        argv = [
            str(CLI),
            "operator",
            "run",
            f"--metrics-address=127.0.0.1:{self.metrics_port}",
            f"--health-address=127.0.0.1:{self.health_port}",
            "--log-format=json",
            *args,
        ]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def get(self, port: int, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2.0)

    def health(self, path: str) -> int:
        try:
            return self.get(self.health_port, path).status_code
        except httpx.HTTPError:
            return 0

    def metrics(self) -> str:
        return self.get(self.metrics_port, "/metrics").text

    def metric(self, name: str, labels: str = "") -> float:
        """Sum of the samples of `name` whose label set contains `labels`."""
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith(name) and labels in line and not line.startswith("#"):
                series, value = line.rsplit(" ", 1)
                if series.split("{")[0] == name:
                    total += float(value)
        return total

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_for(
            lambda: self.alive_or_raise() and self.health("/readyz") == 200,
            timeout=timeout,
            message=f"operator ready (log {self.log_path})",
        )

    def alive_or_raise(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"operator exited {self.proc.returncode}: {self.log()[-3000:]}")
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


def runner(name: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name,
        "runnable": "kuberunner.examples.runnables:SentimentClassifier",
        "supportedResources": ["cpu"],
        "resources": {"cpu": "100m", "memory": "64Mi"},
    }
    base.update(fields)
    return base


def gpu_runner(name: str, gpus: int, **fields: Any) -> dict[str, Any]:
    return runner(
        name,
        supportedResources=["nvidia.com/gpu", "cpu"],
        resources={"cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": gpus},
        **fields,
    )


def rsvc(name: str, runners: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kuberunner.io/v1alpha1",
        "kind": "RunnerService",
        "metadata": {"name": name},
        "spec": {"image": IMAGE, "runners": runners, **spec},
    }


def get_rsvc(cluster: ClusterInfo, ns: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = kubectl_json(cluster, "get", "rsvc", name, "-n", ns)
    return body


def runner_status(cluster: ClusterInfo, ns: str, name: str, runner_name: str) -> dict[str, Any]:
    status = get_rsvc(cluster, ns, name).get("status") or {}
    for entry in status.get("runners") or []:
        if entry.get("name") == runner_name:
            return dict(entry)
    return {}


def condition(body: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def deployment(cluster: ClusterInfo, ns: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = kubectl_json(cluster, "get", "deployment", name, "-n", ns)
    return body


def children(
    cluster: ClusterInfo, ns: str, service: str, kinds: str = "deployments,services"
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl_json(
        cluster, "get", kinds, "-n", ns, "-l", f"kuberunner.io/service={service}"
    )["items"]
    return items


def kubectl_wait_ready(cluster: ClusterInfo, ns: str, name: str, timeout: int = 90) -> None:
    kubectl(
        cluster,
        "wait",
        "--for=condition=Ready",
        f"rsvc/{name}",
        "-n",
        ns,
        f"--timeout={timeout}s",
        timeout=timeout + 10,
    )


def container_env(dep: dict[str, Any]) -> dict[str, str]:
    container = dep["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container.get("env") or []}

"""`kuberunner dev demo`: the README's main job, end to end.

Brings up the local cluster (unless a KUBECONFIG is set), installs the Helm chart, makes sure an
operator reconciles, applies the examples and shows `kubectl get rsvc` until every service is
Ready. On the local cluster kwok only simulates pods, so the chart's operator pod cannot run
anything: the demo then runs the operator as a local process, authenticated as the chart's own
ServiceAccount, so the chart's RBAC is what it works with.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from kuberunner_dev.cluster import ClusterInfo

REPO = Path(__file__).resolve().parents[2]
RELEASE = "kuberunner"
OPERATOR_NAMESPACE = "kuberunner-system"
DEMO_NAMESPACE = "kuberunner-demo"
EXAMPLES = ("cpu-runner.yaml", "gpu-runner.yaml")
OPERATOR_COMPONENT = "operator (demo)"


class DemoError(RuntimeError):
    """A demo step failed; the message names the step and how to look further."""


@attrs.frozen
class Tools:
    kubectl: Path
    helm: Path
    kubeconfig: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def run(self, step: str, argv: Sequence[str | Path], *, quiet: bool = False) -> str:
        done = subprocess.run(
            [str(a) for a in argv], env=self.env(), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise DemoError(f"{step} failed: {' '.join(map(str, argv))}\n{done.stderr.strip()}")
        if not quiet and done.stdout.strip():
            print(done.stdout.rstrip())
        return done.stdout


def _say(message: str) -> None:
    print(f"==> {message}", flush=True)


def _local_cluster(name: str) -> Path:
    from kuberunner_dev.cluster import up

    _say(f"starting the local cluster {name!r} (no KUBECONFIG set)")
    return up(name).kubeconfig


def _install_chart(tools: Tools) -> None:
    _say("installing the operator with Helm (chart charts/kuberunner)")
    began = time.monotonic()
    tools.run(
        "helm install",
        [
            tools.helm, "upgrade", "--install", RELEASE, REPO / "charts" / "kuberunner",
            "--namespace", OPERATOR_NAMESPACE, "--create-namespace", "--wait", "--timeout", "3m",
        ],
        quiet=True,
    )  # fmt: skip
    _say(f"chart installed and its operator Deployment Available ({time.monotonic() - began:.1f}s)")


def _service_account_kubeconfig(tools: Tools, cluster: ClusterInfo) -> Path:
    """A kubeconfig that authenticates as the chart's operator ServiceAccount."""
    account = tools.run(
        "find the operator ServiceAccount",
        [
            tools.kubectl, "get", "serviceaccount", "-n", OPERATOR_NAMESPACE, "-l",
            f"app.kubernetes.io/instance={RELEASE}", "-o", "jsonpath={.items[0].metadata.name}",
        ],
        quiet=True,
    ).strip()  # fmt: skip
    token = tools.run(
        "create a token for the operator ServiceAccount",
        [tools.kubectl, "create", "token", account, "-n", OPERATOR_NAMESPACE, "--duration", "24h"],
        quiet=True,
    ).strip()
    path = cluster.state_dir / "operator-serviceaccount.kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: local\n  cluster:\n    server: {cluster.server}\n"
        f"    certificate-authority: {cluster.ca_cert}\n"
        f"users:\n- name: {account}\n  user:\n    token: {token}\n"
        f"contexts:\n- name: operator\n  context:\n    cluster: local\n    user: {account}\n"
        "current-context: operator\n"
    )
    path.chmod(0o600)
    return path


def _start_local_operator(tools: Tools, cluster_name: str) -> str:
    from kuberunner_dev.cluster import attach_process, info
    from kuberunner_dev.cluster.processes import free_ports, spawn

    cluster = info(cluster_name)
    kubeconfig = _service_account_kubeconfig(tools, cluster)
    metrics_port, health_port = free_ports(2)
    log = cluster.state_dir / "logs" / "operator.log"
    argv = [
        sys.executable, "-m", "kuberunner", "operator", "run", "--all-namespaces",
        "--metrics-address", f"127.0.0.1:{metrics_port}",
        "--health-address", f"127.0.0.1:{health_port}", "--log-format", "text",
    ]  # fmt: skip
    env_before = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(kubeconfig)
    try:
        process = spawn(argv, log)
    finally:
        if env_before is None:
            del os.environ["KUBECONFIG"]
        else:
            os.environ["KUBECONFIG"] = env_before
    attach_process(
        cluster_name, OPERATOR_COMPONENT, process, f"http://127.0.0.1:{health_port}/healthz", log
    )
    _say(f"operator running locally as the chart's ServiceAccount (pid {process.pid}, log {log})")
    return f"http://127.0.0.1:{metrics_port}/metrics"


def _apply_examples(tools: Tools) -> None:
    _say(f"applying {', '.join(EXAMPLES)} in namespace {DEMO_NAMESPACE}")
    manifest = tools.run(
        "create the demo namespace",
        [tools.kubectl, "create", "namespace", DEMO_NAMESPACE, "--dry-run=client", "-o", "yaml"],
        quiet=True,
    )
    subprocess.run(
        [str(tools.kubectl), "apply", "-f", "-"], input=manifest, env=tools.env(), check=True,
        capture_output=True, text=True,
    )  # fmt: skip
    files: list[str | Path] = []
    for example in EXAMPLES:
        files += ["-f", REPO / "examples" / example]
    tools.run("kubectl apply", [tools.kubectl, "apply", "-n", DEMO_NAMESPACE, *files])


def _all_ready(tools: Tools) -> bool:
    out = tools.run(
        "read readiness",
        [
            tools.kubectl, "get", "rsvc", "-n", DEMO_NAMESPACE, "-o",
            'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
        ],
        quiet=True,
    )  # fmt: skip
    states = out.split()
    return len(states) == len(EXAMPLES) and all(s == "True" for s in states)


def _watch_until_ready(tools: Tools, timeout: float) -> float:
    _say("waiting for every RunnerService to be Ready (kubectl get rsvc)")
    began = time.monotonic()
    while True:
        tools.run("kubectl get rsvc", [tools.kubectl, "get", "rsvc", "-n", DEMO_NAMESPACE])
        if _all_ready(tools):
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            tools.run(
                "describe", [tools.kubectl, "describe", "rsvc", "-n", DEMO_NAMESPACE], quiet=False
            )
            raise DemoError(
                f"not every RunnerService was Ready within {timeout:.0f}s; the conditions above "
                "say why (see 'Troubleshooting' in README.md)"
            )
        time.sleep(2)


def _next_steps(tools: Tools, cluster_name: str | None, metrics_url: str | None) -> None:
    ns = DEMO_NAMESPACE
    lines = [
        "",
        "Every RunnerService is Ready. To look further:",
        f"  export KUBECONFIG={tools.kubeconfig}",
        f"  alias kubectl={tools.kubectl}   # v1.36, built from Go modules like the cluster",
        f"  kubectl get rsvc -n {ns} -o wide",
        f"  kubectl describe rsvc llm -n {ns}          # conditions, per-runner workers and GPUs",
        f"  kubectl get deploy,pods -n {ns} -o wide     # GPU pods land on kwok-gpu-* nodes",
        f"  kubectl get deploy -n {ns} -o yaml | grep -A1 KUBERUNNER_WORKER_ENV_MAP",
    ]
    if metrics_url:
        lines.append(f"  curl -s {metrics_url} | grep kuberunner_operator")
    lines += ["", "To tear down:"]
    if cluster_name:
        lines.append(f"  kuberunner dev cluster down --name {cluster_name}  # and the operator")
    else:
        lines += [
            f"  kubectl delete namespace {ns}",
            f"  helm uninstall {RELEASE} -n {OPERATOR_NAMESPACE}",
        ]
    print("\n".join(lines))


def run_demo(args: argparse.Namespace) -> int:
    from kuberunner_dev.cluster.binaries import locate

    began = time.monotonic()
    try:
        binaries = locate(("kubectl", "helm"))
        external = os.environ.get("KUBECONFIG")
        cluster_name = None if external else args.name
        kubeconfig = Path(external) if external else _local_cluster(args.name)
        tools = Tools(binaries["kubectl"], binaries["helm"], kubeconfig)
        _install_chart(tools)
        # On a real cluster the chart's operator pod reconciles; under kwok it cannot run.
        metrics_url = None if cluster_name is None else _start_local_operator(tools, cluster_name)
        _apply_examples(tools)
        waited = _watch_until_ready(tools, args.timeout)
    except (DemoError, RuntimeError) as exc:
        print(f"kuberunner dev demo: {exc}", file=sys.stderr)
        return 1
    _say(f"Ready after {waited:.1f}s of waiting; demo took {time.monotonic() - began:.1f}s in all")
    _next_steps(tools, cluster_name, metrics_url)
    return 0


def register_demo(dev_cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from kuberunner_dev.cluster.state import DEFAULT_NAME

    parser = dev_cmds.add_parser(
        "demo",
        help="local cluster + operator + examples, shown until Ready",
        description="Start the local cluster when no KUBECONFIG is set, install the Helm chart, "
        "run the operator, apply examples/cpu-runner.yaml and examples/gpu-runner.yaml and show "
        "`kubectl get rsvc` until every RunnerService is Ready.",
    )
    parser.add_argument("--name", default=DEFAULT_NAME, help="local cluster name")
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="seconds to wait for Ready (default 180)"
    )
    parser.set_defaults(func=run_demo)

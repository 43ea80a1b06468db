"""`kuberunner dev demo`: the README's main job, end to end, on real pods.

Without a KUBECONFIG it brings up the local cluster with its real node, builds the images and
loads them into the node. Then, on any cluster: Helm installs the chart, whose operator pod runs
under the chart's ServiceAccount and RBAC; the iris example (a real model behind an API server)
and the GPU example are applied; `kubectl wait --for=condition=Ready` waits on what the kubelet's
probes report; and one prediction goes through the API server's Service. The GPU example's pods
land on kwok's simulated GPU nodes (the output says so); the iris pods run on the real node.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs

REPO = Path(__file__).resolve().parents[2]
RELEASE = "kuberunner"
OPERATOR_NAMESPACE = "kuberunner-system"
DEMO_NAMESPACE = "kuberunner-demo"
# (file, RunnerService name): iris runs on the real node, llm on simulated GPU nodes.
EXAMPLES = (("iris.yaml", "iris"), ("gpu-runner.yaml", "llm"))
IMAGES = ("localhost/kuberunner-runner:dev", "localhost/kuberunner-operator:dev")
# The iris example's API server Service (naming.api_server_object_name("iris")), and a request.
API_SERVICE = "iris-api"
FLOWERS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


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


def _timed(timings: dict[str, float], label: str, began: float) -> float:
    took = time.monotonic() - began
    timings[label] = took
    return took


def _local_cluster(name: str, timings: dict[str, float]) -> Path:
    from kuberunner_dev.cluster import up
    from kuberunner_dev.cluster.images import load_images

    _say(f"starting the local cluster {name!r} with its real node (no KUBECONFIG set)")
    began = time.monotonic()
    kubeconfig = up(name, real_node=True).kubeconfig
    _say(f"cluster up ({_timed(timings, 'cluster up', began):.1f}s)")
    _say("building the images with podman (cached; a cold build takes several minutes)")
    began = time.monotonic()
    done = subprocess.run(
        ["bash", str(REPO / "hack" / "build-images.sh")], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise DemoError(f"hack/build-images.sh failed:\n{done.stderr.strip()[-3000:]}")
    load_images(IMAGES, name)
    took = _timed(timings, "images built and loaded", began)
    _say(f"{' and '.join(IMAGES)} loaded into the node's containerd ({took:.1f}s)")
    return kubeconfig


def _install_chart(tools: Tools, timings: dict[str, float]) -> None:
    _say("installing the operator with Helm (chart charts/kuberunner, helm --wait)")
    began = time.monotonic()
    tools.run(
        "helm install",
        [
            tools.helm, "upgrade", "--install", RELEASE, REPO / "charts" / "kuberunner",
            "--namespace", OPERATOR_NAMESPACE, "--create-namespace", "--wait", "--timeout", "5m",
        ],
        quiet=True,
    )  # fmt: skip
    took = _timed(timings, "chart installed, operator pod Ready", began)
    _say(f"operator pod Ready, running under the chart's ServiceAccount ({took:.1f}s):")
    tools.run(
        "list the operator pods",
        [tools.kubectl, "get", "pods", "-n", OPERATOR_NAMESPACE, "-o", "wide"],
    )


def _apply_examples(tools: Tools) -> None:
    names = ", ".join(f"examples/{file}" for file, _ in EXAMPLES)
    _say(f"applying {names} in namespace {DEMO_NAMESPACE}")
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
    for file, _ in EXAMPLES:
        files += ["-f", REPO / "examples" / file]
    tools.run("kubectl apply", [tools.kubectl, "apply", "-n", DEMO_NAMESPACE, *files])


def _wait_ready(tools: Tools, timeout: float, timings: dict[str, float]) -> None:
    services = [f"rsvc/{name}" for _, name in EXAMPLES]
    _say(f"kubectl wait --for=condition=Ready {' '.join(services)}")
    began = time.monotonic()
    done = subprocess.run(
        [
            str(tools.kubectl), "wait", "--for=condition=Ready", *services,
            "-n", DEMO_NAMESPACE, f"--timeout={timeout:.0f}s",
        ],
        env=tools.env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        tools.run("describe", [tools.kubectl, "describe", "rsvc", "-n", DEMO_NAMESPACE])
        raise DemoError(
            f"not every RunnerService was Ready within {timeout:.0f}s; the conditions above "
            "say why (see 'Troubleshooting' in README.md)"
        )
    _say(f"Ready ({_timed(timings, 'apply to Ready', began):.1f}s)")
    tools.run(
        "kubectl get rsvc", [tools.kubectl, "get", "rsvc", "-n", DEMO_NAMESPACE, "-o", "wide"]
    )


def _stamp(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def pod_phases(pod: dict[str, Any]) -> dict[str, float]:
    """Seconds from creation to scheduled, scheduled to container started, started to Ready
    (worker start and the first /readyz 200 the kubelet saw). Times have 1 s resolution."""
    meta, status = pod["metadata"], pod.get("status") or {}
    conditions = {
        c["type"]: _stamp(c.get("lastTransitionTime")) for c in status.get("conditions") or []
    }
    started = None
    for container in status.get("containerStatuses") or []:
        started = _stamp(((container.get("state") or {}).get("running") or {}).get("startedAt"))
    marks = [
        ("scheduled", conditions.get("PodScheduled")),
        ("container started", started),
        ("workers ready", conditions.get("Ready")),
    ]
    out: dict[str, float] = {}
    previous = _stamp(meta.get("creationTimestamp"))
    for label, mark in marks:
        if mark is None or previous is None:
            break
        out[label] = (mark - previous).total_seconds()
        previous = mark
    return out


def _where_pods_run(tools: Tools) -> None:
    from kuberunner_dev.cluster.node import NODE_NAME

    pods = json.loads(
        tools.run(
            "list pods",
            [tools.kubectl, "get", "pods", "-n", DEMO_NAMESPACE, "-o", "json"],
            quiet=True,
        )
    )["items"]
    _say("where the pods run:")
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        node = pod["spec"].get("nodeName") or "-"
        if node == NODE_NAME:
            phases = ", ".join(f"{k} +{v:.0f}s" for k, v in pod_phases(pod).items())
            how = f"real node, probed by its kubelet ({phases})"
        elif node.startswith("kwok-"):
            how = "SIMULATED by kwok (a GPU shape this machine has not got)"
        else:
            how = "on the cluster's own node"
        print(f"  {pod['metadata']['name']:<44} {node:<14} {how}")


def _predict(tools: Tools) -> None:
    from kuberunner_dev.cluster.processes import free_ports

    (port,) = free_ports(1)
    _say(f"one prediction through Service {API_SERVICE} (kubectl port-forward to 127.0.0.1:{port})")
    forward = subprocess.Popen(
        [
            str(tools.kubectl), "port-forward", "-n", DEMO_NAMESPACE, f"svc/{API_SERVICE}",
            f"{port}:3000", "--address", "127.0.0.1",
        ],
        env=tools.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        body = json.dumps({"flowers": FLOWERS}).encode()
        deadline = time.monotonic() + 30
        while True:
            try:
                began = time.monotonic()
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/classify",
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=10) as answer:
                    result = answer.read().decode()
                break
            except OSError as exc:
                if time.monotonic() > deadline or forward.poll() is not None:
                    err = (
                        forward.stderr.read()
                        if forward.poll() is not None and forward.stderr
                        else ""
                    )
                    raise DemoError(f"no answer through the port-forward: {exc} {err}") from exc
                time.sleep(0.3)
        took = time.monotonic() - began
        print(f"  POST /classify {json.dumps({'flowers': FLOWERS})}")
        print(f"  -> {result}  ({took * 1000:.0f} ms)")
    finally:
        forward.terminate()
        forward.wait(10)


def _next_steps(tools: Tools, cluster_name: str | None) -> None:
    ns = DEMO_NAMESPACE
    lines = [
        "",
        "To look further:",
        f"  export KUBECONFIG={tools.kubeconfig}",
        f"  alias kubectl={tools.kubectl}   # v1.36, built from Go modules like the cluster",
        f"  kubectl get rsvc -n {ns} -o wide",
        f"  kubectl describe rsvc iris -n {ns}       # conditions, per-runner workers",
        f"  kubectl logs -n {ns} deploy/{API_SERVICE}",
        f"  kubectl logs -n {OPERATOR_NAMESPACE} deploy/{RELEASE}-operator",
        "",
        "To tear down:",
    ]
    if cluster_name:
        lines.append(f"  kuberunner dev cluster down --name {cluster_name}")
    else:
        lines += [
            f"  kubectl delete namespace {ns}",
            f"  helm uninstall {RELEASE} -n {OPERATOR_NAMESPACE}",
        ]
    print("\n".join(lines))


def run_demo(args: argparse.Namespace) -> int:
    from kuberunner_dev.cluster.binaries import locate

    began = time.monotonic()
    timings: dict[str, float] = {}
    try:
        binaries = locate(("kubectl", "helm"))
        external = os.environ.get("KUBECONFIG")
        cluster_name = None if external else args.name
        kubeconfig = Path(external) if external else _local_cluster(args.name, timings)
        tools = Tools(binaries["kubectl"], binaries["helm"], kubeconfig)
        _install_chart(tools, timings)
        _apply_examples(tools)
        _wait_ready(tools, args.timeout, timings)
        _where_pods_run(tools)
        _predict(tools)
    except (DemoError, RuntimeError) as exc:
        print(f"kuberunner dev demo: {exc}", file=sys.stderr)
        return 1
    total = time.monotonic() - began
    _say(
        "timings: "
        + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        + f"; total {total:.1f}s"
    )
    _next_steps(tools, cluster_name)
    return 0


def register_demo(dev_cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from kuberunner_dev.cluster.state import DEFAULT_NAME

    parser = dev_cmds.add_parser(
        "demo",
        help="local cluster + operator pod + examples, Ready from real probes, one prediction",
        description="Start the local cluster with its real node when no KUBECONFIG is set "
        "(building and loading the images), install the Helm chart, apply examples/iris.yaml "
        "and examples/gpu-runner.yaml, wait until both are Ready and send one prediction "
        "through the iris API server's Service.",
    )
    parser.add_argument("--name", default=DEFAULT_NAME, help="local cluster name")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for Ready (default 300)"
    )
    parser.set_defaults(func=run_demo)

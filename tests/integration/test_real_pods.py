"""The product on real pods: the operator runs in-cluster from the chart, runner pods run on the
dev cluster's real node, and what a user reads (kubectl, HTTP through Services) is checked.

One cluster with the real node for the module (one real node per machine): no kwok GPU node, so
GPU-shaped runners land on the real node, which advertises `nvidia.com/gpu: 4`. The chart's
operator requests no CPU here, so that a runner asking for both of the node's cores fits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from test_operator_support import rsvc

from k8s_helpers import REPO, apply, kubectl, kubectl_json, wait_for
from kuberunner_dev.cluster import ClusterInfo, down, up
from kuberunner_dev.cluster.binaries import locate
from kuberunner_dev.cluster.node import NODE_NAME

pytestmark = pytest.mark.cluster

RUNNER_IMAGE = "localhost/kuberunner-runner:dev"
OPERATOR_IMAGE = "localhost/kuberunner-operator:dev"
OPERATOR_NS = "kuberunner-system"
NODE_GPUS = 4
RESTRICTED = "pod-security.kubernetes.io/enforce=restricted"


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterInfo]:
    subprocess.run(["bash", str(REPO / "hack" / "build-images.sh")], check=True)
    clusters_dir = tmp_path_factory.mktemp("real-pods")
    name = f"pytest-pods-{os.getpid()}"
    env = {**os.environ, "KUBERUNNER_CLUSTERS_DIR": str(clusters_dir)}
    try:
        cluster = up(
            name,
            cpu_nodes=1,
            gpu_nodes=0,
            real_node=True,
            node_gpus=NODE_GPUS,
            clusters_dir=clusters_dir,
            die_with_parent=True,
            timeout=180,
        )
        subprocess.run(
            [sys.executable, "-m", "kuberunner", "dev", "cluster", "load-image", "--name", name,
             RUNNER_IMAGE, OPERATOR_IMAGE],
            env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        # The operator's namespace enforces Pod Security `restricted`: its pod must run there.
        kubectl(cluster, "create", "namespace", OPERATOR_NS)
        kubectl(cluster, "label", "namespace", OPERATOR_NS, RESTRICTED)
        helm = locate(("helm",))["helm"]
        done = subprocess.run(
            [str(helm), f"--kubeconfig={cluster.kubeconfig}", "install", "kuberunner",
             str(REPO / "charts" / "kuberunner"), "-n", OPERATOR_NS,
             "--set", "resources.requests.cpu=0", "--wait", "--timeout", "3m"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        yield cluster
    finally:
        down(name, clusters_dir=clusters_dir)


@pytest.fixture
def ns(real: ClusterInfo, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace under Pod Security `restricted`; deleted (and waited for) afterwards, so the
    next test has the node's CPUs to itself."""
    name = f"{request.node.name[5:40].replace('_', '-').strip('-').lower()}-{os.getpid() % 10000}"
    kubectl(real, "create", "namespace", name)
    kubectl(real, "label", "namespace", name, RESTRICTED)
    try:
        yield name
    finally:
        kubectl(real, "delete", "namespace", name, "--timeout=120s", check=False, timeout=150)


def service(name: str, runners: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    body = rsvc(name, runners, **spec)
    body["spec"]["imagePullPolicy"] = "IfNotPresent"
    return body


def probe_runner(name: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name,
        "runnable": "kuberunner.examples.diagnostics:WorkerProbe",
        "supportedResources": ["cpu"],
        "supportsCpuMultiThreading": True,
        "resources": {"cpu": "100m", "memory": "256Mi"},
    }
    base.update(fields)
    return base


def rsvc_status(cluster: ClusterInfo, ns: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = (
        kubectl_json(cluster, "get", "rsvc", name, "-n", ns).get("status") or {}
    )
    return status


def runner_entry(cluster: ClusterInfo, ns: str, name: str, runner: str) -> dict[str, Any]:
    for entry in rsvc_status(cluster, ns, name).get("runners") or []:
        if entry.get("name") == runner:
            return dict(entry)
    return {}


def wait_ready(cluster: ClusterInfo, ns: str, name: str, timeout: int = 120) -> None:
    done = kubectl(
        cluster, "wait", "--for=condition=Ready", f"rsvc/{name}", "-n", ns,
        f"--timeout={timeout}s", check=False, timeout=timeout + 30,
    )  # fmt: skip
    if done.returncode != 0:
        described = kubectl(cluster, "describe", "rsvc", name, "-n", ns, check=False).stdout
        pods = kubectl(cluster, "get", "pods", "-n", ns, "-o", "wide", check=False).stdout
        raise AssertionError(f"rsvc/{name} not Ready:\n{described}\n{pods}")


def call_from_pod(
    cluster: ClusterInfo, ns: str, url: str, calls: int, body: dict[str, Any] | None = None
) -> list[Any]:
    """POST `body` to `url` `calls` times from a pod in the cluster (through Service DNS),
    8 at a time, each on a fresh connection so that calls spread over a pod's workers."""
    payload = json.dumps(body or {"args": [], "kwargs": {}})
    script = (
        "import json, sys, urllib.request\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        f"url, n, body = {url!r}, {calls}, {payload!r}\n"
        "def one(_):\n"
        "    req = urllib.request.Request(url, data=body.encode(),\n"
        "        headers={'Content-Type': 'application/json', 'Connection': 'close'})\n"
        "    with urllib.request.urlopen(req, timeout=30) as r:\n"
        "        return json.loads(r.read())\n"
        "with ThreadPoolExecutor(8) as pool:\n"
        "    for answer in pool.map(one, range(n)):\n"
        "        print(json.dumps(answer))\n"
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client", "namespace": ns},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "client",
                    "image": RUNNER_IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python", "-c", script],
                    "resources": {"requests": {"cpu": "0"}},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
    apply(cluster, pod, namespace=ns)
    phase = wait_for(
        lambda: (
            (p := kubectl_json(cluster, "get", "pod", "client", "-n", ns)["status"].get("phase"))
            in ("Succeeded", "Failed")
            and p
        ),
        timeout=120,
        message="client pod finished",
    )
    logs = kubectl(cluster, "logs", "client", "-n", ns).stdout
    kubectl(cluster, "delete", "pod", "client", "-n", ns, "--wait=true")
    assert phase == "Succeeded", logs
    return [json.loads(line) for line in logs.splitlines() if line.strip()]


def runner_url(cluster: ClusterInfo, ns: str, name: str, runner: str, method: str) -> str:
    deployment = runner_entry(cluster, ns, name, runner)["deployment"]
    return f"http://{deployment}.{ns}.svc:3000/{method}"


@pytest.mark.parametrize("workers_per_resource", [1, 2])
def test_cpu_worker_plan_reaches_every_worker_of_a_real_pod(
    real: ClusterInfo, ns: str, workers_per_resource: int
) -> None:
    """`cpu: "2"`, multi-threaded: the strategy's worker count and thread variables are what
    each worker process of the running pod sees, and calls through the Service reach all."""
    runner = probe_runner(
        "probe",
        resources={"cpu": "2", "memory": "512Mi"},
        workersPerResource=workers_per_resource,
    )
    apply(real, service("cpu", [runner]), namespace=ns)
    wait_ready(real, ns, "cpu")
    entry = runner_entry(real, ns, "cpu", "probe")
    assert entry["workers"] == workers_per_resource
    answers = call_from_pod(real, ns, runner_url(real, ns, "cpu", "probe", "whoami"), 40)
    by_index = {a["worker_index"]: a for a in answers}
    assert sorted(by_index) == [str(i) for i in range(workers_per_resource)]
    assert len({a["pid"] for a in answers}) == workers_per_resource
    # What each worker sees is the strategy's entry for it, as the operator rendered it.
    deployment = kubectl_json(real, "get", "deployment", entry["deployment"], "-n", ns)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    env_map = json.loads(env["KUBERUNNER_WORKER_ENV_MAP"])
    for index, seen in by_index.items():
        assert set(seen["threads"].values()) == {"2"}, seen  # every thread variable: 2 cores
        assert seen["cuda_visible_devices"] == "-1"  # CPU workers see no GPU
        planned = env_map[index]
        for name, value in seen["threads"].items():
            assert planned[name] == value
        assert planned["CUDA_VISIBLE_DEVICES"] == seen["cuda_visible_devices"]
    (pod,) = kubectl_json(real, "get", "pods", "-n", ns, "-l", "kuberunner.io/runner=probe")[
        "items"
    ]
    assert pod["spec"]["nodeName"] == NODE_NAME


def test_gpu_worker_plan_splits_the_pods_gpus_between_its_workers(
    real: ClusterInfo, ns: str
) -> None:
    """4 GPUs at workersPerResource 0.5 on the real node (which advertises nvidia.com/gpu):
    two workers that see `0,1` and `2,3`."""
    runner = probe_runner(
        "gpu",
        supportedResources=["nvidia.com/gpu", "cpu"],
        supportsCpuMultiThreading=False,
        resources={"cpu": "100m", "memory": "512Mi", "nvidia.com/gpu": 4},
        workersPerResource=0.5,
    )
    apply(real, service("gpus", [runner]), namespace=ns)
    wait_ready(real, ns, "gpus")
    answers = call_from_pod(real, ns, runner_url(real, ns, "gpus", "gpu", "whoami"), 40)
    seen = {a["worker_index"]: a["cuda_visible_devices"] for a in answers}
    assert seen == {"0": "0,1", "1": "2,3"}


def test_ready_waits_for_workers_that_load_for_20_seconds(real: ClusterInfo, ns: str) -> None:
    """A runnable whose constructor takes 20 s: the RunnerService is not Ready while its
    workers load, and `kubectl wait` returns within a few seconds after they answer."""
    runner = probe_runner(
        "slow",
        runnable="kuberunner.examples.diagnostics:SlowStart",
        env=[{"name": "SLOW_START_SECONDS", "value": "20"}],
    )
    applied = time.monotonic()
    apply(real, service("slow", [runner]), namespace=ns)
    # While loading: the pod runs, the RunnerService says it is not Ready, with a reason.
    wait_for(
        lambda: any(
            c["status"].get("phase") == "Running"
            for c in kubectl_json(real, "get", "pods", "-n", ns)["items"]
        ),
        timeout=60,
        message="runner pod running",
    )
    time.sleep(3)
    loading = [c for c in rsvc_status(real, ns, "slow")["conditions"] if c["type"] == "Ready"]
    assert loading[0]["status"] == "False", loading
    assert loading[0]["reason"], loading
    assert time.monotonic() - applied < 20, "the check above must fall inside the load"
    wait_ready(real, ns, "slow", timeout=120)
    ready_after = time.monotonic() - applied
    (pod,) = kubectl_json(real, "get", "pods", "-n", ns)["items"]
    started = next(
        c for c in pod["status"]["conditions"] if c["type"] == "Ready" and c["status"] == "True"
    )
    assert started
    assert ready_after >= 20, f"Ready after {ready_after:.1f}s, before the 20 s load ended"
    print(f"\nslow runner: apply to Ready {ready_after:.1f}s (20 s of model load)")


def test_a_killed_worker_makes_the_pod_unready_then_it_recovers(real: ClusterInfo, ns: str) -> None:
    """Two workers that load for 25 s: one killed inside the running pod is restarted by the
    supervisor, and while it loads again the kubelet's probes (every 5 s, 3 failures) take
    the pod out of service and the RunnerService says so; then all recovers."""
    runner = probe_runner(
        "kill",
        runnable="kuberunner.examples.diagnostics:SlowStart",
        resources={"cpu": "100m", "memory": "512Mi"},
        workersPerResource=2,
        env=[{"name": "SLOW_START_SECONDS", "value": "25"}],
    )
    apply(real, service("kill", [runner]), namespace=ns)
    wait_ready(real, ns, "kill", timeout=150)
    (pod,) = kubectl_json(real, "get", "pods", "-n", ns)["items"]
    name = pod["metadata"]["name"]
    # The newest python process of the container is a worker (the supervisor starts first).
    kill = (
        "import os, signal\n"
        "pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit()\n"
        "    and int(p) != os.getpid()\n"
        "    and b'python' in open(f'/proc/{p}/cmdline', 'rb').read())\n"
        "os.kill(pids[-1], signal.SIGKILL)\n"
    )
    kubectl(real, "exec", name, "-n", ns, "--", "python", "-c", kill)
    wait_for(
        lambda: (
            next(c for c in rsvc_status(real, ns, "kill")["conditions"] if c["type"] == "Ready")[
                "status"
            ]
            == "False"
        ),
        timeout=90,
        message="RunnerService not Ready while a worker is down",
    )
    wait_ready(real, ns, "kill", timeout=150)
    restarts = kubectl_json(real, "get", "pod", name, "-n", ns)["status"]["containerStatuses"][0]
    print(f"\nkilled worker: pod restarts {restarts['restartCount']}")


@pytest.mark.parametrize(
    ("case", "expected_reason", "expected_text"),
    [
        ("import", "CrashLoopBackOff", "No module named 'kuberunner.examples.missing'"),
        ("image", "ImagePullBackOff|ErrImagePull", "localhost/kuberunner-runner:missing"),
        ("oom", "OOMKilled", "memory limit of 192Mi"),
    ],
)
def test_failures_from_a_real_kubelet_are_reported_with_their_cause(
    real: ClusterInfo, ns: str, case: str, expected_reason: str, expected_text: str
) -> None:
    spec: dict[str, Any] = {}
    runner = probe_runner("bad")
    if case == "import":
        runner["runnable"] = "kuberunner.examples.missing:Nothing"
    elif case == "image":
        spec["image"] = "localhost/kuberunner-runner:missing"
    else:
        runner["runnable"] = "kuberunner.examples.diagnostics:MemoryHog"
        runner["resources"] = {"cpu": "100m", "memory": "192Mi"}
        runner["env"] = [{"name": "MEMORY_HOG_MIB", "value": "400"}]
    body = service("bad", [runner])
    body["spec"].update(spec)
    apply(real, body, namespace=ns)
    entry = wait_for(
        lambda: (
            (e := runner_entry(real, ns, "bad", "bad")).get("reason") in expected_reason.split("|")
            and expected_text in str(e.get("message"))
            and e
        ),
        timeout=120,
        message=f"runner reports {expected_reason} with {expected_text!r}",
    )
    print(f"\n{case}: {entry['reason']}: {entry['message']}")
    described = kubectl(real, "describe", "rsvc", "bad", "-n", ns).stdout
    assert expected_text in described
    ready = next(c for c in rsvc_status(real, ns, "bad")["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"


def test_operator_pod_runs_under_pod_security_restricted(real: ClusterInfo) -> None:
    (operator,) = kubectl_json(real, "get", "pods", "-n", OPERATOR_NS)["items"]
    assert operator["spec"]["nodeName"] == NODE_NAME
    assert operator["status"]["phase"] == "Running"
    labels = kubectl_json(real, "get", "namespace", OPERATOR_NS)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_api_server_reaches_runner_replicas_by_service_dns(real: ClusterInfo, ns: str) -> None:
    """The iris example with 2 runner replicas: the API server calls the runner through the
    Service DNS name in KUBERUNNER_RUNNER_MAP, and calls through the API server's own Service
    reach every runner replica."""
    body = json.loads(json.dumps(_iris_example()))
    body["spec"]["runners"][0]["replicas"] = 2
    body["spec"]["runners"][0]["resources"] = {"cpu": "100m", "memory": "256Mi"}
    apply(real, body, namespace=ns)
    wait_ready(real, ns, "iris")
    api = kubectl_json(real, "get", "deployment", "iris-api", "-n", ns)
    (container,) = api["spec"]["template"]["spec"]["containers"]
    runner_map = json.loads(
        next(e["value"] for e in container["env"] if e["name"] == "KUBERUNNER_RUNNER_MAP")
    )
    deployment = runner_entry(real, ns, "iris", "iris")["deployment"]
    assert runner_map == {"iris": f"http://{deployment}.{ns}.svc:3000"}

    flowers = {"flowers": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}
    answers = call_from_pod(real, ns, f"http://iris-api.{ns}.svc:3000/classify", 64, flowers)
    assert answers == [{"species": ["setosa", "virginica"]}] * 64
    runner_pods = kubectl_json(real, "get", "pods", "-n", ns, "-l", "kuberunner.io/runner=iris")
    served = {}
    for pod in runner_pods["items"]:
        metrics = kubectl(
            real, "exec", pod["metadata"]["name"], "-n", ns, "--", "python", "-c",
            "import urllib.request as u; print(u.urlopen('http://127.0.0.1:3000/metrics').read().decode())",
        ).stdout  # fmt: skip
        served[pod["metadata"]["name"]] = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("kuberunner_runner_requests_total{") and 'code="200"' in line
        )
    print(f"\nrequests served per runner replica: {served}")
    assert len(served) == 2
    assert all(count > 0 for count in served.values()), served


def _iris_example() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((REPO / "examples" / "iris.yaml").read_text())
    return doc

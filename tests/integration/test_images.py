"""The runner and operator images, built by hack/build-images.sh and run with podman.

The runner image is run the way Kubernetes runs it under Pod Security `restricted`: read-only
root filesystem with a writable /tmp, uid 65532. The example runnables of the runner-server tests
are mounted read-only and found through PYTHONPATH, as user code in a derived image would be.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import shutil
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_operator_support import kubectl_wait_ready

from k8s_helpers import kubectl, kubectl_json, wait_for
from kuberunner_dev.cluster import ClusterInfo
from podman_helpers import (
    OPERATOR_IMAGE,
    REPO,
    RUNNER_IMAGE,
    UID,
    BuildResult,
    Container,
    HttpResponse,
    build_images,
    free_port,
    http,
    image_inspect,
    run_container,
    run_once,
    wait_for_status,
)

pytestmark = [pytest.mark.podman, pytest.mark.timeout(1200)]

FIXTURES = REPO / "tests" / "fixtures" / "runnables"
CRD_FILE = REPO / "crds" / "runnerservices.kuberunner.io.yaml"
# A CPU runner: two pods of 3 CPUs, which fit the dev cluster's kwok CPU nodes.
EXAMPLE = REPO / "examples" / "cpu-runner.yaml"
NPY = "application/x-kuberunner-npy"
# Kubernetes' restricted profile, as far as podman expresses it: read-only root, writable /tmp
# (an emptyDir in the pod), non-root uid, no capabilities, no privilege escalation.
# podman's --read-only would also mount tmpfs on /run and /var/tmp; Kubernetes does not.
RESTRICTED = (
    "--read-only",
    "--read-only-tmpfs=false",
    "--tmpfs",
    "/tmp:rw,size=64m,mode=1777",
    "--user",
    str(UID),
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
)


@pytest.fixture(scope="session")
def images() -> BuildResult:
    """Both images, built (or reused from the layer cache) once per session."""
    result = build_images()
    print(f"\nbuild-images.sh took {result.seconds:.1f} s\n{result.log}")
    return result


def project_version() -> str:
    with (REPO / "pyproject.toml").open("rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert isinstance(version, str)
    return version


def post_json(url: str, payload: object) -> HttpResponse:
    return http(
        "POST",
        url,
        body=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )


def metric_total(metrics_text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    found = False
    pattern = re.compile(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$")
    for line in metrics_text.splitlines():
        match = pattern.match(line)
        if not match:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
            found = True
    assert found, f"no sample of {name} with {labels} in /metrics:\n{metrics_text[:3000]}"
    return total


@pytest.fixture
def served_runner(
    images: BuildResult, request: pytest.FixtureRequest
) -> Iterator[tuple[Container, str, float]]:
    """The runner image serving example_runnables:<param> with two workers on 127.0.0.1.

    A param ending in "+pid1" runs without --init: the server itself is PID 1, as in a pod."""
    target: str = request.param
    init = not target.endswith("+pid1")
    target = target.removesuffix("+pid1")
    port = free_port()
    start = time.monotonic()
    with run_container(
        RUNNER_IMAGE,
        [target, "--name", "images-test", "--host", "127.0.0.1", "--port", str(port)],
        podman_args=[
            *RESTRICTED,
            "-v",
            f"{FIXTURES}:/fixtures:ro",
            "-e",
            "PYTHONPATH=/fixtures",
            "-e",
            'KUBERUNNER_WORKER_ENV_MAP={"0": {}, "1": {}}',
        ],
        init=init,
    ) as container:
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_status(f"{url}/readyz", 200, timeout=60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\ncontainer log:\n{container.logs()}") from exc
        ready_after = time.monotonic() - start
        print(f"\n{target}: podman run to /readyz 200 in {ready_after:.2f} s")
        yield container, url, ready_after


@pytest.mark.parametrize("served_runner", ["example_runnables:Doubler"], indirect=True)
def test_runner_image_serves_batches_reports_metrics_and_stops_cleanly(
    served_runner: tuple[Container, str, float],
) -> None:
    container, url, _ = served_runner
    assert http("GET", f"{url}/livez").status == 200

    # JSON wire format through the batchable __call__ (POST /).
    got = post_json(f"{url}/", {"args": [[1, 2, 3]], "kwargs": {}})
    assert got.status == 200, got.body
    assert got.json() == [2, 4, 6]

    # The binary .npy format: numpy runs inside the image.
    buf = io.BytesIO()
    np.save(buf, np.arange(8, dtype=np.float32).reshape(2, 4), allow_pickle=False)
    got = http("POST", f"{url}/", body=buf.getvalue(), headers={"Content-Type": NPY})
    assert got.status == 200, got.body
    assert got.headers["content-type"].startswith(NPY)
    result = np.load(io.BytesIO(got.body), allow_pickle=False)
    np.testing.assert_array_equal(result, np.arange(8, dtype=np.float32).reshape(2, 4) * 2)

    # Errors are answered, not crashed on.
    assert http("GET", f"{url}/no-such-method").status in (404, 405)
    bad = http("POST", f"{url}/", body=b"{not json", headers={"Content-Type": "application/json"})
    assert bad.status == 400

    metrics = http("GET", f"{url}/metrics")
    assert metrics.status == 200
    text = metrics.body.decode()
    assert (
        metric_total(text, "kuberunner_runner_requests_total", runner="images-test", code="200")
        >= 2
    )
    assert "kuberunner_runner_batch_size_bucket" in text

    # The server ran as uid 65532 and wrote only below /tmp (the root filesystem is read-only).
    assert container.exec("id", "-u").stdout.strip() == str(UID)
    assert container.inspect()["HostConfig"]["ReadonlyRootfs"] is True

    seconds = container.stop(timeout=15)
    print(f"podman stop took {seconds:.2f} s")
    state = container.state()
    assert state["Status"] == "exited"
    assert state["ExitCode"] == 0, container.logs()
    assert seconds < 10, f"SIGTERM did not stop the server promptly ({seconds:.1f} s)"


@pytest.mark.parametrize(
    "served_runner", ["kuberunner.examples.iris:IrisClassifier"], indirect=True
)
def test_runner_image_serves_the_iris_model_trained_at_build_time(
    served_runner: tuple[Container, str, float],
) -> None:
    """The model the image build trained (scikit-learn's iris data) is in the image and
    answers real predictions; scikit-learn itself is not (only its weights are)."""
    container, url, _ = served_runner
    flowers = [[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5], [6.7, 3.0, 5.2, 2.3]]
    got = post_json(f"{url}/predict", {"args": [flowers], "kwargs": {}})
    assert got.status == 200, got.body
    assert got.json() == ["setosa", "versicolor", "virginica"]
    probe = "import importlib.util as u; print(u.find_spec('sklearn') is None)"
    assert container.exec("python", "-c", probe).stdout.strip() == "True"


@pytest.mark.parametrize("served_runner", ["example_runnables:Adder"], indirect=True)
def test_runner_image_drains_in_flight_request_on_sigterm(
    served_runner: tuple[Container, str, float],
) -> None:
    container, url, _ = served_runner
    answers: list[HttpResponse] = []
    caller = threading.Thread(
        target=lambda: answers.append(post_json(f"{url}/hang", {"args": [1.5], "kwargs": {}}))
    )
    caller.start()
    time.sleep(0.5)  # the request is in flight inside the container
    seconds = container.stop(timeout=15)
    caller.join(timeout=20)
    assert answers, "the in-flight request never returned"
    assert answers[0].status == 200, answers[0].body
    assert answers[0].json() == "woke up"
    state = container.state()
    assert state["ExitCode"] == 0, container.logs()
    assert seconds < 10


@pytest.mark.parametrize("served_runner", ["example_runnables:Adder+pid1"], indirect=True)
def test_runner_image_as_pid1_stops_on_sigterm_and_reaps_workers(
    served_runner: tuple[Container, str, float],
) -> None:
    """Kubernetes runs the entrypoint as PID 1 with no init: SIGTERM must still end it cleanly."""
    container, url, _ = served_runner
    got = post_json(f"{url}/add", {"args": [2, 3], "kwargs": {}})
    assert got.status == 200, got.body
    assert got.json() == 5
    listing = container.exec(
        "sh", "-c", 'for p in /proc/[0-9]*; do echo "${p#/proc/} $(tr "\\0" " " <$p/cmdline)"; done'
    ).stdout
    commands = dict(line.split(" ", 1) for line in listing.splitlines() if " " in line)
    assert "kuberunner runner serve" in commands["1"], listing
    workers = [c for c in commands.values() if "kuberunner.server.worker" in c]
    assert len(workers) == 2, listing
    seconds = container.stop(timeout=15)
    state = container.state()
    assert state["ExitCode"] == 0, container.logs()
    assert seconds < 10, f"PID 1 did not act on SIGTERM ({seconds:.1f} s)"


def test_runner_image_metadata(images: BuildResult) -> None:
    config = image_inspect(RUNNER_IMAGE)["Config"]
    assert config["Entrypoint"] == ["kuberunner", "runner", "serve"]
    assert config["User"] == f"{UID}:{UID}"
    assert "3000/tcp" in config["ExposedPorts"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "kuberunner-runner"
    assert labels["org.opencontainers.image.version"] == project_version()
    assert labels["org.opencontainers.image.source"].startswith("https://")


def test_operator_image_metadata(images: BuildResult) -> None:
    config = image_inspect(OPERATOR_IMAGE)["Config"]
    assert config["Entrypoint"] == ["kuberunner", "operator", "run"]
    assert config["User"] == f"{UID}:{UID}"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "kuberunner-operator"
    assert labels["org.opencontainers.image.version"] == project_version()
    assert labels["org.opencontainers.image.source"].startswith("https://")


# Prints each compiler or toolchain program found on PATH, and any installer left in the venv;
# nothing is expected. (The base image's own python3-pip is not ours to remove.)
FIND_TOOLS = (
    "for t in cc gcc g++ c++ clang make ld as cpp; do command -v $t; done; "
    "ls /opt/venv/bin/pip* /opt/venv/lib/python3*/site-packages/pip 2>/dev/null; true"
)


@pytest.mark.parametrize("image", [RUNNER_IMAGE, OPERATOR_IMAGE])
def test_image_runs_as_65532_without_compilers(images: BuildResult, image: str) -> None:
    proc = run_once(image, ["-c", "id -u; id -g"], entrypoint="sh", podman_args=RESTRICTED)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(UID), str(UID)]
    # Without --user too: the image's own default user is the non-root one.
    proc = run_once(image, ["-u"], entrypoint="id")
    assert proc.stdout.strip() == str(UID)
    proc = run_once(image, ["-c", FIND_TOOLS], entrypoint="sh")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"build tools left in {image}: {proc.stdout}"


def test_runner_image_has_no_operator_dependencies(images: BuildResult) -> None:
    probe = (
        "import importlib.util as u, kuberunner, numpy; "
        "print([m for m in ('kopf', 'kubernetes', 'kuberunner_operator') if u.find_spec(m)])"
    )
    proc = run_once(RUNNER_IMAGE, ["-c", probe], entrypoint="python", podman_args=RESTRICTED)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    # The CLI still works there and offers the runner command.
    proc = run_once(RUNNER_IMAGE, ["--help"], podman_args=RESTRICTED)
    assert proc.returncode == 0, proc.stderr
    assert "--name" in proc.stdout
    assert "MODULE:CLASS" in proc.stdout


def test_operator_image_runs_operator_cli(images: BuildResult) -> None:
    proc = run_once(OPERATOR_IMAGE, ["--help"], podman_args=RESTRICTED)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--namespace", "--all-namespaces", "--leader-elect", "--health-address"):
        assert flag in proc.stdout, proc.stdout
    probe = "import kopf, kuberunner_operator.main; print('ok')"
    proc = run_once(OPERATOR_IMAGE, ["-c", probe], entrypoint="python", podman_args=RESTRICTED)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


@pytest.mark.parametrize("image", [RUNNER_IMAGE, OPERATOR_IMAGE])
def test_images_carry_no_dev_tools(images: BuildResult, image: str) -> None:
    """The local cluster and the demo live in devtools/ and never reach an image: no module,
    no `kuberunner dev` command, not even the official `kubernetes` client the tests use."""
    probe = (
        "import importlib.util as u; "
        "print([m for m in ('kuberunner_dev', 'kubernetes') if u.find_spec(m)])"
    )
    proc = run_once(image, ["-c", probe], entrypoint="python", podman_args=RESTRICTED)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    proc = run_once(image, ["dev", "--help"], entrypoint="kuberunner", podman_args=RESTRICTED)
    assert proc.returncode == 2, proc.stdout
    assert "invalid choice: 'dev'" in proc.stderr


@pytest.mark.cluster
def test_operator_image_reconciles_example_to_ready(
    images: BuildResult, cluster: ClusterInfo, tmp_path: Path
) -> None:
    """The operator image, run by podman against the local cluster, makes an example Ready."""
    kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    # Polled rather than `kubectl wait`, which fails at once while the CRD has no conditions yet.
    wait_for(
        lambda: any(
            c["type"] == "Established" and c["status"] == "True"
            for c in kubectl_json(cluster, "get", "crd", "runnerservices.kuberunner.io")
            .get("status", {})
            .get("conditions", [])
        ),
        timeout=120,
        message="the RunnerService CRD to be Established",
    )
    namespace = f"kr-img-{secrets.token_hex(3)}"
    kubectl(cluster, "create", "namespace", namespace)
    # The container user (65532) must be able to read the mounted kubeconfig.
    kubeconfig = tmp_path / "kubeconfig"
    shutil.copyfile(cluster.kubeconfig, kubeconfig)
    kubeconfig.chmod(0o644)
    metrics_port, health_port = free_port(), free_port()
    try:
        with run_container(
            OPERATOR_IMAGE,
            [
                f"--namespace={namespace}",
                f"--metrics-address=127.0.0.1:{metrics_port}",
                f"--health-address=127.0.0.1:{health_port}",
                "--log-format=json",
            ],
            podman_args=[
                *RESTRICTED,
                "-v",
                f"{kubeconfig}:/kubeconfig:ro",
                "-e",
                "KUBECONFIG=/kubeconfig",
            ],
        ) as container:
            try:
                wait_for_status(f"http://127.0.0.1:{health_port}/readyz", 200, timeout=60)
                applied = time.monotonic()
                kubectl(cluster, "apply", "-n", namespace, "-f", str(EXAMPLE))
                name = yaml.safe_load(EXAMPLE.read_text())["metadata"]["name"]
                # `kubectl wait` gives up at once on an object without conditions yet.
                wait_for(
                    lambda: (
                        kubectl_json(cluster, "get", "rsvc", name, "-n", namespace)
                        .get("status", {})
                        .get("conditions")
                    ),
                    timeout=60,
                    message=f"rsvc/{name} to get conditions",
                )
                kubectl_wait_ready(cluster, namespace, name, timeout=120)
                print(f"\n{EXAMPLE.name}: apply to Ready in {time.monotonic() - applied:.2f} s")
            except Exception as exc:
                raise AssertionError(f"{exc}\noperator log:\n{container.logs()[-4000:]}") from exc
            deployments = kubectl_json(cluster, "get", "deployments", "-n", namespace)["items"]
            assert deployments, "the operator created no Deployment"
            image = deployments[0]["spec"]["template"]["spec"]["containers"][0]["image"]
            assert image == RUNNER_IMAGE
            text = http("GET", f"http://127.0.0.1:{metrics_port}/metrics").body.decode()
            assert "kuberunner_operator_reconcile_total" in text
            container.stop(timeout=15)
            assert container.state()["ExitCode"] == 0, container.logs()[-4000:]
    finally:
        kubectl(cluster, "delete", "namespace", namespace, "--wait=false", check=False)

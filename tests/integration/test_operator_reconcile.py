"""The operator against the real dev cluster: kubectl in, Deployments, pods and status out.

One operator process (the real CLI) serves the module; it watches only namespaces named
`kr-op-*`, and every test works in a namespace of its own.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Iterator

import pytest
from test_operator_support import (
    OperatorProcess,
    children,
    condition,
    container_env,
    deployment,
    get_rsvc,
    gpu_runner,
    install_crd,
    kubectl_wait_ready,
    new_namespace,
    rsvc,
    runner,
    runner_status,
)

from k8s_helpers import apply, kubectl, kubectl_json, wait_for
from kuberunner import Runnable
from kuberunner_dev.cluster import ClusterInfo

pytestmark = pytest.mark.cluster

NS_PREFIX = "kr-op"


@pytest.fixture(scope="module")
def operator(
    cluster: ClusterInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    install_crd(cluster)
    proc = OperatorProcess(
        cluster, tmp_path_factory.mktemp("operator"), f"--namespace={NS_PREFIX}-*"
    )
    try:
        proc.wait_ready()
        yield proc
    finally:
        code = proc.stop()
        assert code == 0, f"operator exit code {code}: {proc.log()[-3000:]}"


@pytest.fixture
def ns(cluster: ClusterInfo, operator: OperatorProcess) -> Iterator[str]:
    name = new_namespace(cluster, NS_PREFIX)
    try:
        yield name
    finally:
        kubectl(cluster, "delete", "namespace", name, "--wait=false", check=False)


def plan_names(cluster: ClusterInfo, ns: str, service: str) -> dict[str, str]:
    """runner name -> Deployment name, from the service's status."""
    status = get_rsvc(cluster, ns, service).get("status") or {}
    return {r["name"]: r["deployment"] for r in status.get("runners") or [] if r.get("deployment")}


def test_gpu_and_cpu_runners_become_ready_with_worker_env_maps(
    cluster: ClusterInfo, ns: str
) -> None:
    apply(
        cluster,
        rsvc(
            "mixed",
            [
                gpu_runner("tok_a", 4, workersPerResource=0.5),
                runner(
                    "cpu-b",
                    resources={"cpu": "3", "memory": "64Mi"},
                    supportsCpuMultiThreading=True,
                    workersPerResource=2,
                ),
            ],
        ),
        namespace=ns,
    )
    kubectl_wait_ready(cluster, ns, "mixed")
    body = get_rsvc(cluster, ns, "mixed")
    assert body["status"]["observedGeneration"] == body["metadata"]["generation"]
    names = plan_names(cluster, ns, "mixed")

    gpu = deployment(cluster, ns, names["tok_a"])
    env_map = json.loads(container_env(gpu)["KUBERUNNER_WORKER_ENV_MAP"])
    assert env_map == {"0": {"CUDA_VISIBLE_DEVICES": "0,1"}, "1": {"CUDA_VISIBLE_DEVICES": "2,3"}}
    container = gpu["spec"]["template"]["spec"]["containers"][0]
    assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "4"
    tolerations = gpu["spec"]["template"]["spec"]["tolerations"]
    assert any(t.get("key") == "nvidia.com/gpu" for t in tolerations)
    assert gpu["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0

    cpu = deployment(cluster, ns, names["cpu-b"])
    cpu_map = json.loads(container_env(cpu)["KUBERUNNER_WORKER_ENV_MAP"])
    assert sorted(cpu_map) == ["0", "1"]
    assert all("3" in worker.values() for worker in cpu_map.values())

    pods = kubectl_json(cluster, "get", "pods", "-n", ns)["items"]
    placed = {p["metadata"]["labels"]["kuberunner.io/runner"]: p["spec"]["nodeName"] for p in pods}
    assert placed["tok_a"].startswith("kwok-gpu-")
    assert placed["cpu-b"].startswith("kwok-cpu-")

    tok = runner_status(cluster, ns, "mixed", "tok_a")
    assert tok["workers"] == 2
    assert tok["ready"] is True
    # Services exist too, one per runner, selected by the same labels.
    kinds = sorted(o["kind"] for o in children(cluster, ns, "mixed"))
    assert kinds == ["Deployment", "Deployment", "Service", "Service"]


def test_nine_gpus_on_eight_gpu_nodes_is_insufficient_gpu_and_never_ready(
    cluster: ClusterInfo, ns: str
) -> None:
    apply(cluster, rsvc("huge", [gpu_runner("big", 9)]), namespace=ns)
    entry = wait_for(
        lambda: (
            (e := runner_status(cluster, ns, "huge", "big")).get("reason") == "InsufficientGPU"
            and e
        ),
        timeout=60,
        message="runner big InsufficientGPU",
    )
    assert "Insufficient nvidia.com/gpu" in entry["message"]  # the scheduler's own words
    assert entry["startup"]["phase"] == "scheduling"
    time.sleep(3)
    ready = condition(get_rsvc(cluster, ns, "huge"), "Ready")
    assert ready["status"] == "False"
    assert ready["reason"] == "InsufficientGPU"


def test_spec_update_rolls_out_bumps_observed_generation_and_prunes_removed_runner(
    cluster: ClusterInfo, ns: str
) -> None:
    apply(cluster, rsvc("upd", [runner("keep"), runner("drop")]), namespace=ns)
    kubectl_wait_ready(cluster, ns, "upd")
    names = plan_names(cluster, ns, "upd")
    before = deployment(cluster, ns, names["keep"])
    gen = get_rsvc(cluster, ns, "upd")["metadata"]["generation"]

    apply(
        cluster,
        rsvc("upd", [runner("keep", env=[{"name": "MODEL_REV", "value": "2"}])]),
        namespace=ns,
    )
    wait_for(
        lambda: get_rsvc(cluster, ns, "upd")["status"]["observedGeneration"] == gen + 1,
        timeout=30,
        message="observedGeneration bumped",
    )
    kubectl_wait_ready(cluster, ns, "upd")
    after = deployment(cluster, ns, names["keep"])
    assert container_env(after)["MODEL_REV"] == "2"
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    assert after["status"]["updatedReplicas"] == after["spec"]["replicas"]
    wait_for(
        lambda: (
            sorted(o["metadata"]["name"] for o in children(cluster, ns, "upd"))
            == [names["keep"], names["keep"]]
        ),
        timeout=30,
        message="children of the removed runner pruned",
    )


def test_replicas_set_by_the_autoscaler_are_never_reverted(cluster: ClusterInfo, ns: str) -> None:
    scaled = runner("auto", autoscaling={"minReplicas": 1, "maxReplicas": 5})
    apply(cluster, rsvc("hpa", [scaled]), namespace=ns)
    kubectl_wait_ready(cluster, ns, "hpa")
    name = plan_names(cluster, ns, "hpa")["auto"]
    assert kubectl_json(cluster, "get", "hpa", name, "-n", ns)["spec"]["maxReplicas"] == 5
    # Scale as the HPA controller does: through the scale subresource, another field manager.
    kubectl(cluster, "scale", f"deployment/{name}", "-n", ns, "--replicas=3")
    # A spec change makes the operator re-apply the Deployment.
    scaled["env"] = [{"name": "TOUCH", "value": "1"}]
    apply(cluster, rsvc("hpa", [scaled]), namespace=ns)
    wait_for(
        lambda: container_env(deployment(cluster, ns, name)).get("TOUCH") == "1",
        timeout=30,
        message="re-applied Deployment",
    )
    time.sleep(3)
    assert deployment(cluster, ns, name)["spec"]["replicas"] == 3
    wait_for(
        lambda: runner_status(cluster, ns, "hpa", "auto").get("readyReplicas") == 3,
        timeout=60,
        message="status follows the autoscaled replica count",
    )


def test_hand_edits_and_deletion_of_a_deployment_are_repaired(
    cluster: ClusterInfo, ns: str
) -> None:
    apply(cluster, rsvc("drift", [runner("r")]), namespace=ns)
    kubectl_wait_ready(cluster, ns, "drift")
    name = plan_names(cluster, ns, "drift")["r"]
    original = deployment(cluster, ns, name)
    image = original["spec"]["template"]["spec"]["containers"][0]["image"]

    kubectl(cluster, "set", "image", f"deployment/{name}", "-n", ns, "runner=evil.example/x:1")
    kubectl(cluster, "set", "env", f"deployment/{name}", "-n", ns, "INJECTED=1")

    def repaired() -> bool:
        dep = deployment(cluster, ns, name)
        container = dep["spec"]["template"]["spec"]["containers"][0]
        return container["image"] == image and "INJECTED" not in container_env(dep)

    wait_for(repaired, timeout=15, message="image and env restored")

    kubectl(cluster, "delete", "deployment", name, "-n", ns, "--wait=false")
    wait_for(
        lambda: deployment(cluster, ns, name)["metadata"]["uid"] != original["metadata"]["uid"],
        timeout=15,
        message="deleted Deployment recreated",
    )
    kubectl_wait_ready(cluster, ns, "drift")

    # A core Service has no metadata.generation: its deletion must be seen as drift all the
    # same (not left to the periodic resync).
    service = kubectl_json(cluster, "get", "service", name, "-n", ns)
    kubectl(cluster, "delete", "service", name, "-n", ns, "--wait=false")
    wait_for(
        lambda: (  # an exception (not found yet) counts as "not yet"
            kubectl_json(cluster, "get", "service", name, "-n", ns)["metadata"]["uid"]
            != service["metadata"]["uid"]
        ),
        timeout=15,
        message="deleted Service recreated",
    )


def test_deleting_the_service_garbage_collects_every_child(cluster: ClusterInfo, ns: str) -> None:
    apply(cluster, rsvc("gone", [runner("a"), runner("b")]), namespace=ns)
    kubectl_wait_ready(cluster, ns, "gone")
    assert len(children(cluster, ns, "gone")) == 4
    # No finalizer: deletion completes without the operator's help.
    assert not get_rsvc(cluster, ns, "gone")["metadata"].get("finalizers")
    kubectl(cluster, "delete", "rsvc", "gone", "-n", ns, "--timeout=30s")
    wait_for(
        lambda: children(cluster, ns, "gone", "deployments,services,replicasets,pods") == [],
        timeout=90,
        message="children garbage-collected",
    )


def test_strategy_error_is_invalid_spec_in_status_and_creates_nothing(
    cluster: ClusterInfo, ns: str, operator: OperatorProcess
) -> None:
    apply(
        cluster,
        rsvc("bad", [gpu_runner("frac", 2, workersPerResource=1.5), runner("fine")]),
        namespace=ns,
    )
    entry = wait_for(
        lambda: (
            (e := runner_status(cluster, ns, "bad", "frac")).get("reason") == "InvalidSpec" and e
        ),
        timeout=30,
        message="runner frac InvalidSpec",
    )
    assert "workers_per_resource" in entry["message"]
    assert "1.5" in entry["message"]
    wait_for(
        lambda: runner_status(cluster, ns, "bad", "fine").get("ready") is True,
        timeout=60,
        message="the valid runner still runs",
    )
    deployments = children(cluster, ns, "bad", "deployments")
    assert [d["metadata"]["labels"]["kuberunner.io/runner"] for d in deployments] == ["fine"]
    body = get_rsvc(cluster, ns, "bad")
    assert condition(body, "Ready")["status"] == "False"
    assert condition(body, "Degraded")["reason"] == "InvalidSpec"
    events = kubectl_json(
        cluster, "get", "events", "-n", ns, "--field-selector", "involvedObject.name=bad"
    )["items"]
    assert any(e["reason"] == "InvalidSpec" for e in events)
    # A strategy error is a user error, reported, not retried hot: once the service has settled,
    # an idle window adds no error reconciles. (The baseline is taken here, not at the start,
    # because earlier tests' namespace deletions may still count errors while this one starts.)
    errors_before = operator.metric("kuberunner_operator_reconcile_total", 'result="error"')
    time.sleep(3)
    assert operator.metric("kuberunner_operator_reconcile_total", 'result="error"') == (
        errors_before
    )


def test_crashlooping_pods_are_reported_with_their_reason(cluster: ClusterInfo, ns: str) -> None:
    crashing = runner("boom", podTemplate={"annotations": {"kuberunner.io/simulate": "crashloop"}})
    apply(cluster, rsvc("crash", [crashing]), namespace=ns)
    entry = wait_for(
        lambda: (
            (e := runner_status(cluster, ns, "crash", "boom")).get("reason") == "CrashLoopBackOff"
            and e
        ),
        timeout=60,
        message="runner boom CrashLoopBackOff",
    )
    assert entry["ready"] is False
    assert condition(get_rsvc(cluster, ns, "crash"), "Ready")["status"] == "False"


def test_started_but_unready_pods_report_readiness_failing(cluster: ClusterInfo, ns: str) -> None:
    """kwok's `notready` pods have started (startup probe passed) and are not Ready. Their pod
    IPs are simulated, so the operator gets no /readyz answer and says so."""
    unready = runner("slow", podTemplate={"annotations": {"kuberunner.io/simulate": "notready"}})
    apply(cluster, rsvc("unready", [unready]), namespace=ns)
    entry = wait_for(
        lambda: (
            (e := runner_status(cluster, ns, "unready", "slow")).get("reason") == "ReadinessFailing"
            and e
        ),
        timeout=60,
        message="runner slow ReadinessFailing",
    )
    assert "started, then its readiness probe failed: no answer from /readyz" in entry["message"]
    assert entry["summary"].startswith("ReadinessFailing: pod ")
    wide = kubectl(cluster, "get", "rsvc", "unready", "-n", ns, "-o", "wide").stdout
    assert "runner slow: ReadinessFailing: pod" in wide


def test_start_up_phases_of_the_newest_pod_are_in_status_and_metrics(
    cluster: ClusterInfo, ns: str, operator: OperatorProcess
) -> None:
    apply(cluster, rsvc("phased", [runner("p")]), namespace=ns)
    kubectl_wait_ready(cluster, ns, "phased")
    entry = wait_for(
        lambda: (
            (e := runner_status(cluster, ns, "phased", "p")).get("startup", {}).get("workersReady")
            and e
        ),
        timeout=30,
        message="start-up phases in status",
    )
    startup = entry["startup"]
    assert startup["pod"].startswith(entry["deployment"])
    times = [startup[k] for k in ("created", "scheduled", "imagePulled", "started", "workersReady")]
    assert times == sorted(times), startup  # kwok's times, in phase order
    assert "phase" not in startup
    assert startup["slowestPhase"] in ("scheduling", "image pull", "container start", "model load")
    assert entry["summary"] == "ready"
    assert get_rsvc(cluster, ns, "phased")["status"]["summary"] == "ready"
    wait_for(
        lambda: (
            operator.metric(
                "kuberunner_operator_runner_startup_seconds_count", 'phase="model load"'
            )
            >= 1
        ),
        timeout=30,
        message="startup histogram observed",
    )


def _gpu_template_limit(cluster: ClusterInfo, ns: str, name: str) -> str:
    container = deployment(cluster, ns, name)["spec"]["template"]["spec"]["containers"][0]
    return str(container["resources"]["limits"]["nvidia.com/gpu"])


def test_gpu_rollout_that_cannot_fit_is_insufficient_gpu_then_rollout_stalled(
    cluster: ClusterInfo, ns: str, operator: OperatorProcess
) -> None:
    rollout = {"progressDeadline": "15s"}
    apply(cluster, rsvc("grow", [gpu_runner("g", 4, rollout=rollout)]), namespace=ns)
    kubectl_wait_ready(cluster, ns, "grow")
    name = plan_names(cluster, ns, "grow")["g"]
    assert deployment(cluster, ns, name)["spec"]["progressDeadlineSeconds"] == 15
    first = runner_status(cluster, ns, "grow", "g")
    assert first["lastReadyRevision"] == first["revision"] == 1

    apply(cluster, rsvc("grow", [gpu_runner("g", 9, rollout=rollout)]), namespace=ns)
    started = time.monotonic()
    entry = wait_for(
        lambda: (
            (e := runner_status(cluster, ns, "grow", "g")).get("reason") == "InsufficientGPU" and e
        ),
        timeout=30,
        message="runner g InsufficientGPU",
    )
    assert time.monotonic() - started < 15, "InsufficientGPU came only after the deadline"
    assert "Insufficient nvidia.com/gpu" in entry["message"]
    entry = wait_for(
        lambda: (
            (e := runner_status(cluster, ns, "grow", "g")).get("reason") == "RolloutStalled" and e
        ),
        timeout=90,
        message="runner g RolloutStalled",
    )
    assert time.monotonic() - started >= 15
    assert entry["message"].startswith("revision 2 made no progress: ")
    assert "; cause: InsufficientGPU: pod " in entry["message"]
    assert entry["lastReadyRevision"] == 1  # kept while the new revision fails
    assert "rolledBack" not in entry  # autoRollback is off: the runner stays stalled
    assert _gpu_template_limit(cluster, ns, name) == "9"
    labels = f'namespace="{ns}",runner="g",service="grow"'
    wait_for(
        lambda: operator.metric("kuberunner_operator_rollout_stalled", labels) == 1,
        timeout=10,
        message="rollout_stalled gauge is 1",
    )
    events = kubectl_json(
        cluster, "get", "events", "-n", ns, "--field-selector", "involvedObject.name=grow"
    )["items"]
    assert {"InsufficientGPU", "RolloutStalled"} <= {e["reason"] for e in events}


def test_auto_rollback_returns_a_stalled_gpu_rollout_to_the_last_ready_revision(
    cluster: ClusterInfo, ns: str, operator: OperatorProcess
) -> None:
    rollout = {"progressDeadline": "15s", "autoRollback": True}
    apply(cluster, rsvc("undo", [gpu_runner("g", 4, rollout=rollout)]), namespace=ns)
    kubectl_wait_ready(cluster, ns, "undo")
    name = plan_names(cluster, ns, "undo")["g"]

    apply(cluster, rsvc("undo", [gpu_runner("g", 9, rollout=rollout)]), namespace=ns)
    entry = wait_for(
        lambda: (e := runner_status(cluster, ns, "undo", "g")).get("reason") == "RolledBack" and e,
        timeout=90,
        message="runner g RolledBack",
    )
    rolled = entry["rolledBack"]
    assert (rolled["generation"], rolled["failedRevision"], rolled["revision"]) == (2, 2, 1)
    assert rolled["reason"] == "InsufficientGPU"
    assert "Insufficient nvidia.com/gpu" in rolled["message"]
    assert entry["message"].startswith("runs revision 1, its last Ready one, instead of")
    # The Deployment runs the last Ready template again; the spec still asks for 9 GPUs.
    assert _gpu_template_limit(cluster, ns, name) == "4"
    body = get_rsvc(cluster, ns, "undo")
    assert body["spec"]["runners"][0]["resources"]["nvidia.com/gpu"] == 9
    assert body["metadata"]["generation"] == 2
    assert condition(body, "Ready")["status"] == "False"
    assert condition(body, "Degraded")["reason"] == "RolledBack"
    # The old template's pod comes back and is ready; the operator does not re-apply the spec.
    wait_for(
        lambda: runner_status(cluster, ns, "undo", "g").get("readyReplicas") == 1,
        timeout=60,
        message="the last Ready revision runs again",
    )
    time.sleep(3)
    assert _gpu_template_limit(cluster, ns, name) == "4"
    entry = runner_status(cluster, ns, "undo", "g")
    assert entry["reason"] == "RolledBack"
    assert entry["lastReadyRevision"] == entry["revision"] == 3  # the old template, renumbered
    labels = f'namespace="{ns}",runner="g",service="undo"'
    assert operator.metric("kuberunner_operator_rollout_stalled", labels) == 0
    events = kubectl_json(
        cluster, "get", "events", "-n", ns, "--field-selector", "involvedObject.name=undo"
    )["items"]
    assert "RolledBack" in {e["reason"] for e in events}

    # A new spec is a new rollout: it applies, and a fitting one becomes Ready.
    apply(cluster, rsvc("undo", [gpu_runner("g", 2, rollout=rollout)]), namespace=ns)
    kubectl_wait_ready(cluster, ns, "undo", timeout=60)
    assert _gpu_template_limit(cluster, ns, name) == "2"
    assert "rolledBack" not in runner_status(cluster, ns, "undo", "g")


def test_metrics_and_health_endpoints(
    cluster: ClusterInfo, ns: str, operator: OperatorProcess
) -> None:
    apply(cluster, rsvc("metered", [runner("m")]), namespace=ns)
    kubectl_wait_ready(cluster, ns, "metered")
    assert operator.metric("kuberunner_operator_reconcile_total", 'result="success"') >= 1
    assert operator.metric("kuberunner_operator_managed_services") >= 1
    assert operator.metric("kuberunner_operator_reconcile_duration_seconds_count") >= 1
    text = operator.metrics()
    assert "kuberunner_operator_build_info{" in text
    assert operator.health("/healthz") == 200
    assert operator.health("/readyz") == 200


def test_operator_logs_are_json_and_never_show_env_values(
    cluster: ClusterInfo, ns: str, operator: OperatorProcess
) -> None:
    secret_ref = {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    plain = {"name": "PLAIN_VALUE_MARKER", "value": "sup3r-s3cret-literal"}
    apply(cluster, rsvc("quiet", [runner("q")], env=[secret_ref, plain]), namespace=ns)
    wait_for(
        lambda: get_rsvc(cluster, ns, "quiet").get("status", {}).get("observedGeneration") == 1,
        timeout=30,
        message="status written",
    )
    log = operator.log()
    assert "sup3r-s3cret-literal" not in log
    lines = [line for line in log.splitlines() if line.strip()]
    assert lines
    for line in lines[:50]:
        json.loads(line)


def test_non_bmp_characters_in_env_values_are_applied(cluster: ClusterInfo, ns: str) -> None:
    value = "hi \U0001f600 \u2713"
    env = [{"name": "GREETING", "value": value}]
    apply(cluster, rsvc("emoji", [runner("r", env=env)]), namespace=ns)
    kubectl_wait_ready(cluster, ns, "emoji")
    name = plan_names(cluster, ns, "emoji")["r"]
    assert container_env(deployment(cluster, ns, name))["GREETING"] == value


def test_a_child_refused_by_the_api_server_is_reported_as_apply_failed(
    cluster: ClusterInfo, ns: str
) -> None:
    # The CRD passes volumes through; the API server wants an RFC 1123 label as volume name.
    bad = runner("bad", podTemplate={"volumes": [{"name": "Bad_Volume", "emptyDir": {}}]})
    apply(cluster, rsvc("refused", [bad, runner("fine")]), namespace=ns)
    entry = wait_for(
        lambda: (
            (e := runner_status(cluster, ns, "refused", "bad")).get("reason") == "ApplyFailed" and e
        ),
        timeout=30,
        message="runner bad ApplyFailed",
    )
    assert "Deployment" in entry["message"], entry
    assert "Bad_Volume" in entry["message"], entry
    assert entry["ready"] is False
    wait_for(
        lambda: runner_status(cluster, ns, "refused", "fine").get("ready") is True,
        timeout=60,
        message="the other runner still runs",
    )
    body = get_rsvc(cluster, ns, "refused")
    assert condition(body, "Ready")["status"] == "False"
    assert condition(body, "Degraded")["reason"] == "ApplyFailed"
    events = kubectl_json(
        cluster, "get", "events", "-n", ns, "--field-selector", "involvedObject.name=refused"
    )["items"]
    assert any(e["reason"] == "ApplyFailed" for e in events)


# 63 characters is the longest label value: past it the kuberunner.io/service label of children
# and pods holds a hashed form of the name. 253 is the longest name Kubernetes allows.
@pytest.mark.parametrize("length", [63, 64, 253])
def test_long_named_services_get_pod_reasons_and_ready_from_events(
    cluster: ClusterInfo, ns: str, length: int
) -> None:
    """Status follows pod and Deployment events, not the 5-minute resync, however long the
    name: the pod-level InsufficientGPU reason first, then Ready once the spec fits."""
    name = ("fz-" + "a" * length)[:length]
    apply(cluster, rsvc(name, [gpu_runner("big", 9)]), namespace=ns)
    entry = wait_for(
        lambda: (
            (e := runner_status(cluster, ns, name, "big")).get("reason") == "InsufficientGPU" and e
        ),
        timeout=30,
        message=f"{length}-character service reports its pod InsufficientGPU",
    )
    assert "nvidia.com/gpu" in entry["message"]
    apply(cluster, rsvc(name, [gpu_runner("big", 4)]), namespace=ns)
    kubectl_wait_ready(cluster, ns, name, timeout=45)
    assert runner_status(cluster, ns, name, "big")["readyReplicas"] == 1


def test_the_runnable_these_tests_deploy_is_one_the_runner_image_ships() -> None:
    """kwok starts nothing, so a wrong runnable path would go unnoticed here: check it."""
    module_name, _, class_name = runner("r")["runnable"].partition(":")
    runnable = getattr(importlib.import_module(module_name), class_name)
    assert issubclass(runnable, Runnable)
    assert module_name.startswith("kuberunner.")  # installed in the image, not a test fixture

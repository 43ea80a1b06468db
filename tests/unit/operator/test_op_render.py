"""render_service: the children of a RunnerService, checked field by field."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from kuberunner_operator import naming
from kuberunner_operator.render import Rendered, render_service

NS = "team"
UID = "0b8d-uid"


def runner(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "r", "runnable": "pkg.mod:Model", "resources": {"cpu": 1}}
    base.update(fields)
    return base


def render(*runners: dict[str, Any], **spec: Any) -> Rendered:
    body: dict[str, Any] = {"image": "img:1", "runners": list(runners) or [runner()]}
    body.update(spec)
    return render_service("demo", NS, UID, 3, body)


def find(rendered: Rendered, kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        o
        for o in rendered.objects
        if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


def deployment(rendered: Rendered, index: int = 0) -> dict[str, Any]:
    (dep,) = find(rendered, "Deployment", rendered.runners[index].object_name)
    return dep


def container(dep: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = dep["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env(dep: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(dep)["env"]}


def test_gpu_runner_with_half_worker_per_gpu() -> None:
    rendered = render(
        runner(
            supportedResources=["nvidia.com/gpu"],
            resources={"nvidia.com/gpu": 4, "memory": "8Gi"},
            workersPerResource=0.5,
        )
    )
    plan = rendered.runners[0]
    assert plan.workers == 2
    assert plan.gpus_per_pod == 4
    dep = deployment(rendered)
    assert json.loads(env(dep)["KUBERUNNER_WORKER_ENV_MAP"]) == {
        "0": {"CUDA_VISIBLE_DEVICES": "0,1"},
        "1": {"CUDA_VISIBLE_DEVICES": "2,3"},
    }
    resources = container(dep)["resources"]
    assert resources["limits"] == {"memory": "8Gi", "nvidia.com/gpu": 4}
    assert resources["requests"]["nvidia.com/gpu"] == 4
    pod = dep["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert dep["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }


def test_multi_threaded_cpu_runner_gets_threads_per_worker() -> None:
    rendered = render(
        runner(supportsCpuMultiThreading=True, resources={"cpu": "3"}, workersPerResource=2)
    )
    env_map = json.loads(env(deployment(rendered))["KUBERUNNER_WORKER_ENV_MAP"])
    assert sorted(env_map) == ["0", "1"]
    for worker in env_map.values():
        assert worker["OMP_NUM_THREADS"] == "3"
        assert worker["CUDA_VISIBLE_DEVICES"] == "-1"


@pytest.mark.parametrize(
    ("resources", "wpr", "workers"),
    [({"cpu": 2}, 1, 2), ({"cpu": "500m"}, 1, 1), ({"cpu": "2.5"}, 2, 6), ({"cpu": 4}, 1.0, 4)],
)
def test_single_threaded_cpu_worker_counts(
    resources: dict[str, Any], wpr: float, workers: int
) -> None:
    rendered = render(runner(resources=resources, workersPerResource=wpr))
    assert rendered.runners[0].workers == workers
    env_map = json.loads(env(deployment(rendered))["KUBERUNNER_WORKER_ENV_MAP"])
    assert len(env_map) == workers
    assert {w["OMP_NUM_THREADS"] for w in env_map.values()} == {"1"}
    cpu_rollout = deployment(rendered)["spec"]["strategy"]["rollingUpdate"]
    assert cpu_rollout == {"maxSurge": "25%", "maxUnavailable": "25%"}
    assert "tolerations" not in deployment(rendered)["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"resources": {"cpu": 2}, "workersPerResource": 0.5}, "workers_per_resource"),
        (
            {
                "supportedResources": ["nvidia.com/gpu"],
                "resources": {"nvidia.com/gpu": 1},
                "workersPerResource": 0.5,
            },
            "nvidia.com/gpu",
        ),
        (
            {
                "supportedResources": ["nvidia.com/gpu"],
                "resources": {"nvidia.com/gpu": 2},
                "workersPerResource": 1.5,
            },
            "workers_per_resource",
        ),
        (
            {"supportedResources": ["nvidia.com/gpu"], "resources": {"cpu": "0"}},
            "No known supported resource",
        ),
        # Found by the reliability fuzzer: absurd sizes must be reported, not planned.
        (
            {
                "supportedResources": ["nvidia.com/gpu", "cpu"],
                "resources": {"nvidia.com/gpu": 645849},
            },
            "at most 1024 are allowed",
        ),
        ({"resources": {"cpu": "1e18"}}, "at most 256 are allowed"),
        ({"resources": {"cpu": "257"}}, "would run 257 worker processes per pod"),
    ],
)
def test_strategy_errors_make_the_runner_invalid(fields: dict[str, Any], needle: str) -> None:
    rendered = render(runner(name="bad", **fields), runner(name="good"))
    bad, good = rendered.runners
    assert bad.invalid is not None
    assert needle in bad.invalid
    assert bad.workers == 0
    assert not find(rendered, "Deployment", bad.object_name)
    assert not find(rendered, "Service", bad.object_name)
    assert good.invalid is None
    assert find(rendered, "Deployment", good.object_name)


def test_the_largest_allowed_plan_renders() -> None:
    rendered = render(runner(name="wide", resources={"cpu": "256"}))
    (planned,) = rendered.runners
    assert planned.invalid is None
    assert planned.workers == 256


def test_runner_command_port_probes_and_config_overrides() -> None:
    rendered = render(
        runner(
            name="tok_a",
            batching={"enabled": True, "maxBatchSize": 8},
            methods={"predict": {"maxLatencyMs": 50}, "other": {}},
            resources={"cpu": "2", "memory": "1Gi"},
        )
    )
    main = container(deployment(rendered))
    assert main["name"] == "runner"
    assert main["command"] == [
        "kuberunner", "runner", "serve", "pkg.mod:Model",
        "--name", "tok_a", "--host", "0.0.0.0", "--port", "3000",
    ]  # fmt: skip
    assert main["ports"] == [{"name": "http", "containerPort": 3000, "protocol": "TCP"}]
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    startup = main["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    assert json.loads(env(deployment(rendered))["KUBERUNNER_CONFIG_OVERRIDES"]) == {
        "runners": {
            "tok_a": {
                "batching": {
                    "enabled": True,
                    "max_batch_size": 8,
                    "methods": {"predict": {"max_latency_ms": 50}},
                },
                "resources": {"cpu": "2", "memory": "1Gi"},
                "workers_per_resource": 1,
            }
        }
    }
    assert main["resources"] == {
        "requests": {"cpu": "2", "memory": "1Gi"},
        "limits": {"memory": "1Gi"},
    }


def test_pod_is_restricted_and_scrapeable() -> None:
    dep = deployment(render())
    template = dep["spec"]["template"]
    pod = template["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(dep)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container(dep)["volumeMounts"]
    assert template["metadata"]["annotations"] == {
        "prometheus.io/path": "/metrics",
        "prometheus.io/port": "3000",
        "prometheus.io/scrape": "true",
    }


def test_labels_selectors_and_owner_references() -> None:
    rendered = render(
        runner(name="a", autoscaling={"maxReplicas": 3}, disruptionBudget={"minAvailable": 1}),
        apiServer={"service": "pkg.svc:svc"},
    )
    for obj in rendered.objects:
        meta = obj["metadata"]
        assert meta["namespace"] == NS
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "kuberunner.io/v1alpha1",
                "kind": "RunnerService",
                "name": "demo",
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "kuberunner"
        assert meta["labels"]["kuberunner.io/service"] == "demo"
    for dep in find(rendered, "Deployment"):
        selector = dep["spec"]["selector"]["matchLabels"]
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()
        (svc,) = find(rendered, "Service", dep["metadata"]["name"])
        assert svc["spec"]["selector"] == selector
        assert svc["spec"]["type"] == "ClusterIP"
    kinds = [o["kind"] for o in rendered.objects]
    assert kinds == [
        "Service", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget",
        "Service", "Deployment",
    ]  # fmt: skip


def test_autoscaling_leaves_replicas_to_the_hpa() -> None:
    rendered = render(runner(autoscaling={"minReplicas": 2, "maxReplicas": 5}, replicas=7))
    dep = deployment(rendered)
    assert "replicas" not in dep["spec"]
    assert rendered.runners[0].replicas is None
    (hpa,) = find(rendered, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": dep["metadata"]["name"],
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_hpa_metrics_and_behavior_pass_through() -> None:
    metrics = [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "q"},
                "target": {"type": "AverageValue", "averageValue": "5"},
            },
        }
    ]
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 60}}
    rendered = render(
        runner(autoscaling={"maxReplicas": 4, "metrics": metrics, "behavior": behavior})
    )
    (hpa,) = find(rendered, "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"] == metrics
    assert hpa["spec"]["behavior"] == behavior


def test_fixed_replicas_are_applied() -> None:
    rendered = render(runner(replicas=4))
    assert deployment(rendered)["spec"]["replicas"] == 4
    assert not find(rendered, "HorizontalPodAutoscaler")
    assert not find(rendered, "PodDisruptionBudget")


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        ({"minAvailable": 1}, {"minAvailable": 1}),
        ({"maxUnavailable": "25%"}, {"maxUnavailable": "25%"}),
    ],
)
def test_disruption_budget(budget: dict[str, Any], expected: dict[str, Any]) -> None:
    rendered = render(runner(disruptionBudget=budget))
    (pdb,) = find(rendered, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"] == {"selector": deployment(rendered)["spec"]["selector"], **expected}


@pytest.mark.parametrize(
    ("gpu", "rollout", "strategy"),
    [
        (True, {"type": "Recreate"}, {"type": "Recreate"}),
        (
            True,
            {"maxSurge": 1},
            {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
        ),
        (
            False,
            {"maxUnavailable": 0},
            {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        ),
    ],
)
def test_rollout_overrides(gpu: bool, rollout: dict[str, Any], strategy: dict[str, Any]) -> None:
    resources = {"nvidia.com/gpu": 1} if gpu else {"cpu": 1}
    rendered = render(
        runner(supportedResources=["nvidia.com/gpu", "cpu"], resources=resources, rollout=rollout)
    )
    assert deployment(rendered)["spec"]["strategy"] == strategy


def test_env_merge_keeps_value_from_and_drops_reserved_names() -> None:
    secret = {"secretKeyRef": {"name": "s", "key": "k"}}
    rendered = render(
        runner(env=[{"name": "LEVEL", "value": "debug"}, {"name": "EXTRA", "value": "1"}]),
        env=[
            {"name": "TOKEN", "valueFrom": secret},
            {"name": "LEVEL", "value": "info"},
            {"name": "KUBERUNNER_WORKER_ENV_MAP", "value": "{}"},
        ],
    )
    entries = container(deployment(rendered))["env"]
    names = [e["name"] for e in entries]
    assert names == [
        "KUBERUNNER_WORKER_ENV_MAP", "KUBERUNNER_CONFIG_OVERRIDES", "TOKEN", "LEVEL", "EXTRA",
    ]  # fmt: skip
    assert entries[2] == {"name": "TOKEN", "valueFrom": secret}
    assert entries[3] == {"name": "LEVEL", "value": "debug"}
    assert json.loads(entries[0]["value"]) != {}


def test_pod_template_merges_field_by_field() -> None:
    service_template = {
        "labels": {"team": "a", "tier": "x"},
        "annotations": {"note": "svc"},
        "nodeSelector": {"zone": "a"},
        "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
        "volumes": [{"name": "models", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
        "volumeMounts": [{"name": "models", "mountPath": "/models"}],
        "securityContext": {"runAsUser": 1000, "fsGroup": 2000},
        "serviceAccountName": "svc-sa",
        "resources": {"requests": {"ephemeral-storage": "1Gi"}, "limits": {"memory": "2Gi"}},
        "affinity": {"nodeAffinity": {"x": 1}},
    }
    runner_template = {
        "labels": {"tier": "model"},
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}],
        "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "c"}}],
        "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}],
        "securityContext": {"runAsUser": 1001},
        "affinity": {"podAntiAffinity": {"y": 2}},
    }
    rendered = render(
        runner(podTemplate=runner_template, resources={"cpu": 1, "memory": "1Gi"}),
        podTemplate=service_template,
    )
    dep = deployment(rendered)
    template = dep["spec"]["template"]
    pod = template["spec"]
    labels = template["metadata"]["labels"]
    assert labels["team"] == "a"
    assert labels["tier"] == "model"
    assert labels["kuberunner.io/runner"] == "r"
    assert template["metadata"]["annotations"]["note"] == "svc"
    assert pod["nodeSelector"] == {"disk": "ssd", "zone": "a"}
    assert pod["tolerations"] == [
        {"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}
    ]
    assert pod["volumes"] == [
        {"name": "tmp", "emptyDir": {}},
        {"name": "models", "persistentVolumeClaim": {"claimName": "c"}},
    ]
    assert container(dep)["volumeMounts"][1] == {
        "name": "models",
        "mountPath": "/models",
        "readOnly": True,
    }
    assert pod["securityContext"]["runAsUser"] == 1001
    assert pod["securityContext"]["fsGroup"] == 2000
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == "svc-sa"
    assert pod["affinity"] == {"nodeAffinity": {"x": 1}, "podAntiAffinity": {"y": 2}}
    assert container(dep)["resources"] == {
        "requests": {"cpu": 1, "ephemeral-storage": "1Gi", "memory": "1Gi"},
        "limits": {"memory": "1Gi"},
    }


def test_api_server_gets_the_runner_map() -> None:
    rendered = render(
        runner(name="tok_a"),
        runner(name="tok-a", autoscaling={"maxReplicas": 2}),
        apiServer={
            "service": "pkg.svc:svc",
            "replicas": 2,
            "resources": {"cpu": "500m", "memory": "1Gi"},
            "env": [{"name": "X", "value": "1"}],
        },
        env=[{"name": "Y", "value": "2"}],
    )
    assert rendered.api_server is not None
    assert rendered.api_server.object_name == "demo-api"
    (dep,) = find(rendered, "Deployment", "demo-api")
    assert dep["spec"]["replicas"] == 2
    main = container(dep)
    assert main["command"][:4] == ["kuberunner", "api", "serve", "pkg.svc:svc"]
    runner_map = json.loads(env(dep)["KUBERUNNER_RUNNER_MAP"])
    assert runner_map == {
        plan.name: f"http://{plan.object_name}.{NS}.svc:3000" for plan in rendered.runners
    }
    assert env(dep)["X"] == "1"
    assert env(dep)["Y"] == "2"
    assert (
        dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "api-server"
    )
    assert main["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "1Gi"},
    }


def test_names_of_similar_runners_do_not_collide() -> None:
    rendered = render(runner(name="tok_a"), runner(name="tok-a"), runner(name="tok.a"))
    names = [p.object_name for p in rendered.runners]
    assert len(set(names)) == 3
    assert all(
        n == naming.runner_object_name("demo", p.name)
        for n, p in zip(names, rendered.runners, strict=True)
    )


def test_rendering_is_deterministic_and_pure() -> None:
    body = {
        "image": "img:1",
        "env": [{"name": "A", "value": "1"}],
        "podTemplate": {"labels": {"b": "1", "a": "2"}},
        "runners": [
            runner(name="x", supportsCpuMultiThreading=True, resources={"cpu": 4}),
            runner(
                name="y", supportedResources=["nvidia.com/gpu"], resources={"nvidia.com/gpu": 2}
            ),
        ],
        "apiServer": {"service": "m:s"},
    }
    frozen = copy.deepcopy(body)
    first = render_service("demo", NS, UID, 1, body)
    second = render_service("demo", NS, UID, 2, copy.deepcopy(body))
    assert json.dumps(first.objects, sort_keys=False) == json.dumps(second.objects, sort_keys=False)
    assert body == frozen


def test_image_pull_settings() -> None:
    rendered = render(imagePullPolicy="Always", imagePullSecrets=[{"name": "regcred"}])
    dep = deployment(rendered)
    assert container(dep)["imagePullPolicy"] == "Always"
    assert dep["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert "imagePullPolicy" not in container(deployment(render()))

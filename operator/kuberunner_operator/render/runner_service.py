"""`render_service`: the desired children of one RunnerService (pure and deterministic)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from kuberunner.envvars import CONFIG_OVERRIDES, RUNNER_MAP, WORKER_ENV_MAP
from kuberunner_operator import naming
from kuberunner_operator.models import (
    DEFAULT_PROGRESS_DEADLINE,
    DEFAULT_STARTUP_TIMEOUT,
    ApiServerSpec,
    Rollout,
    RunnerServiceSpec,
    RunnerSpec,
    duration_seconds,
)
from kuberunner_operator.render import objects
from kuberunner_operator.render.desired import DesiredComponent, Manifest, Rendered
from kuberunner_operator.render.merge import merge_env, merge_pod_templates
from kuberunner_operator.render.pod import Container, pod_template
from kuberunner_operator.render.workers import (
    plan_runner_workers,
    resource_request,
    workers_per_resource,
)

Obj = dict[str, Any]

# The operator sets these; a user env entry of the same name is dropped (never duplicated).
RESERVED_ENV = frozenset({WORKER_ENV_MAP, CONFIG_OVERRIDES, RUNNER_MAP})

CPU_ROLLOUT = {"maxSurge": "25%", "maxUnavailable": "25%"}
# A surge pod would wait for GPUs that the old pods still hold (kserve#4618).
GPU_ROLLOUT = {"maxSurge": 0, "maxUnavailable": 1}


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _user_env(env: list[Obj]) -> list[Obj]:
    return [e for e in env if e["name"] not in RESERVED_ENV]


def deployment_strategy(rollout: Rollout | None, gpu: bool) -> Obj:
    """The Deployment strategy: the GPU- or CPU-safe default, with `rollout` fields over it."""
    if rollout is not None and rollout.type == "Recreate":
        return {"type": "Recreate"}
    rolling: Obj = dict(GPU_ROLLOUT if gpu else CPU_ROLLOUT)
    if rollout is not None:
        if rollout.max_surge is not None:
            rolling["maxSurge"] = rollout.max_surge
        if rollout.max_unavailable is not None:
            rolling["maxUnavailable"] = rollout.max_unavailable
    return {"type": "RollingUpdate", "rollingUpdate": rolling}


def startup_seconds(runner: RunnerSpec) -> int:
    return round(duration_seconds(runner.startup_timeout or DEFAULT_STARTUP_TIMEOUT))


def progress_deadline_seconds(rollout: Rollout | None) -> int:
    deadline = rollout.progress_deadline if rollout is not None else None
    return max(1, round(duration_seconds(deadline or DEFAULT_PROGRESS_DEADLINE)))


def config_overrides(runner: RunnerSpec) -> Obj:
    """The runner's section of KUBERUNNER_CONFIG_OVERRIDES (BentoML `runners.<name>` shape)."""
    section: Obj = {
        "resources": resource_request(runner),
        "workers_per_resource": workers_per_resource(runner),
    }
    batching: Obj = {}
    if runner.batching is not None:
        if runner.batching.enabled is not None:
            batching["enabled"] = runner.batching.enabled
        if runner.batching.max_batch_size is not None:
            batching["max_batch_size"] = runner.batching.max_batch_size
        if runner.batching.max_latency_ms is not None:
            batching["max_latency_ms"] = runner.batching.max_latency_ms
    methods = {
        name: method.model_dump(exclude_none=True)
        for name, method in sorted(runner.methods.items())
    }
    methods = {name: values for name, values in methods.items() if values}
    if methods:
        batching["methods"] = methods
    if batching:
        section["batching"] = batching
    return {"runners": {runner.name: section}}


def _runner_container(
    runner: RunnerSpec, env_map: dict[str, dict[str, str]], env: list[Obj]
) -> Container:
    res = runner.resources
    requests: Obj = {}
    limits: Obj = {}
    if res.cpu is not None:
        requests["cpu"] = res.cpu
    if res.memory is not None:
        requests["memory"] = res.memory
        limits["memory"] = res.memory
    if res.nvidia_gpu is not None:
        requests["nvidia.com/gpu"] = res.nvidia_gpu
        limits["nvidia.com/gpu"] = res.nvidia_gpu
    system = [
        {"name": WORKER_ENV_MAP, "value": _json(env_map)},
        {"name": CONFIG_OVERRIDES, "value": _json(config_overrides(runner))},
    ]
    command = [
        "kuberunner",
        "runner",
        "serve",
        runner.runnable,
        "--name",
        runner.name,
        "--host",
        "0.0.0.0",
        "--port",
        str(naming.PORT),
    ]
    return Container(
        name="runner",
        command=command,
        env=[*system, *_user_env(env)],
        requests=requests,
        limits=limits,
        gpu=res.nvidia_gpu is not None,
        startup_seconds=startup_seconds(runner),
        startup_path="/readyz",
    )


def _component_objects(
    plan: DesiredComponent,
    namespace: str,
    owner: Obj,
    labels: dict[str, str],
    template: Obj,
    strategy: Obj,
    progress_deadline: int | None = None,
) -> list[Manifest]:
    def meta() -> Obj:
        return objects.metadata(plan.object_name, namespace, labels, owner)

    return [
        objects.service(meta(), plan.selector),
        objects.deployment(
            meta(), plan.selector, template, plan.replicas, strategy, progress_deadline
        ),
    ]


def render_runner(
    service: str, namespace: str, owner: Obj, spec: RunnerServiceSpec, runner: RunnerSpec
) -> tuple[DesiredComponent, list[Manifest]]:
    object_name = naming.runner_object_name(service, runner.name)
    selector = naming.selector_labels(service, naming.RUNNER_COMPONENT, runner.name)
    base = DesiredComponent(
        name=runner.name,
        component=naming.RUNNER_COMPONENT,
        object_name=object_name,
        url=naming.service_url(object_name, namespace),
        selector=selector,
        gpus_per_pod=runner.resources.nvidia_gpu or 0,
        replicas=None if runner.autoscaling else runner.replicas,
        autoscaled=runner.autoscaling is not None,
    )
    try:
        workers = plan_runner_workers(runner)
    except ValueError as exc:
        return replace(base, invalid=str(exc)), []
    plan = replace(
        base,
        workers=workers.count,
        env_map=workers.env_map,
        auto_rollback=runner.rollout is not None and runner.rollout.auto_rollback,
    )
    labels = naming.common_labels(service, naming.RUNNER_COMPONENT, runner.name)
    merged = merge_pod_templates(spec.pod_template, runner.pod_template)
    container = _runner_container(runner, workers.env_map, merge_env(spec.env, runner.env))
    template = pod_template(spec, merged, labels, container)
    strategy = deployment_strategy(runner.rollout, container.gpu)
    deadline = progress_deadline_seconds(runner.rollout)
    out = _component_objects(plan, namespace, owner, labels, template, strategy, deadline)
    if runner.autoscaling is not None:
        meta = objects.metadata(object_name, namespace, labels, owner)
        out.append(objects.hpa(meta, object_name, runner.autoscaling))
    if runner.disruption_budget is not None:
        meta = objects.metadata(object_name, namespace, labels, owner)
        out.append(objects.pdb(meta, selector, runner.disruption_budget))
    return plan, out


def runner_map(service: str, namespace: str, spec: RunnerServiceSpec) -> dict[str, str]:
    """Runner name -> in-cluster URL of its Service, for every runner of the spec."""
    return {
        r.name: naming.service_url(naming.runner_object_name(service, r.name), namespace)
        for r in sorted(spec.runners, key=lambda r: r.name)
    }


def render_api_server(
    service: str, namespace: str, owner: Obj, spec: RunnerServiceSpec, api: ApiServerSpec
) -> tuple[DesiredComponent, list[Manifest]]:
    object_name = naming.api_server_object_name(service)
    selector = naming.selector_labels(service, naming.API_SERVER_COMPONENT, None)
    labels = naming.common_labels(service, naming.API_SERVER_COMPONENT, None)
    plan = DesiredComponent(
        name=naming.API_SERVER_STATUS_NAME,
        component=naming.API_SERVER_COMPONENT,
        object_name=object_name,
        url=naming.service_url(object_name, namespace),
        selector=selector,
        replicas=None if api.autoscaling else api.replicas,
        autoscaled=api.autoscaling is not None,
    )
    requests: Obj = {}
    limits: Obj = {}
    if api.resources is not None:
        if api.resources.cpu is not None:
            requests["cpu"] = api.resources.cpu
        if api.resources.memory is not None:
            requests["memory"] = api.resources.memory
            limits["memory"] = api.resources.memory
    container = Container(
        name="api-server",
        command=[
            "kuberunner",
            "api",
            "serve",
            api.service,
            "--host",
            "0.0.0.0",
            "--port",
            str(naming.PORT),
        ],
        env=[
            {"name": RUNNER_MAP, "value": _json(runner_map(service, namespace, spec))},
            *_user_env(merge_env(spec.env, api.env)),
        ],
        requests=requests,
        limits=limits,
        gpu=False,
    )
    merged = merge_pod_templates(spec.pod_template, api.pod_template)
    template = pod_template(spec, merged, labels, container)
    strategy = deployment_strategy(None, gpu=False)
    out = _component_objects(plan, namespace, owner, labels, template, strategy)
    if api.autoscaling is not None:
        meta = objects.metadata(object_name, namespace, labels, owner)
        out.append(objects.hpa(meta, object_name, api.autoscaling))
    return plan, out


def render_service(
    name: str,
    namespace: str,
    uid: str,
    generation: int | None,
    spec: RunnerServiceSpec | dict[str, Any],
) -> Rendered:
    """All children of RunnerService `namespace/name`: per runner a Service, a Deployment
    and, when asked, an HPA and a PDB; then the API server's. Invalid runners get a plan with
    `invalid` set and no objects. Same input, same output (applies are no-ops)."""
    parsed = spec if isinstance(spec, RunnerServiceSpec) else RunnerServiceSpec.model_validate(spec)
    owner = objects.owner_reference(name, uid)
    plans: list[DesiredComponent] = []
    manifests: list[Manifest] = []
    for runner in parsed.runners:
        plan, out = render_runner(name, namespace, owner, parsed, runner)
        plans.append(plan)
        manifests.extend(out)
    api_plan: DesiredComponent | None = None
    if parsed.api_server is not None:
        api_plan, out = render_api_server(name, namespace, owner, parsed, parsed.api_server)
        manifests.extend(out)
    return Rendered(objects=manifests, runners=plans, api_server=api_plan, generation=generation)

"""The pod template of a runner or API-server Deployment (docs/contracts.md "Runner pod shape")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kuberunner.merging import deep_merge
from kuberunner_operator import naming
from kuberunner_operator.models import GPU_RESOURCE, PodTemplate, RunnerServiceSpec
from kuberunner_operator.render.merge import merge_by_key

Obj = dict[str, Any]

RUN_AS = 65532
TMP_VOLUME = "tmp"
TMP_PATH = "/tmp"
# A model load may take minutes: the startup probe allows `startup_seconds` (10 minutes by
# default) before liveness applies.
STARTUP_PERIOD_SECONDS = 5
DEFAULT_STARTUP_SECONDS = 600
TERMINATION_GRACE_SECONDS = 60
# A deleted pod leaves its Service's endpoints while kube-proxy on every node catches up; it
# keeps serving that long before SIGTERM starts the drain, so no new connection meets a server
# that is closing (the kubelet's own sleep: no shell or binary needed in the image).
PRE_STOP_SLEEP_SECONDS = 5

PROMETHEUS_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(naming.PORT),
    "prometheus.io/path": "/metrics",
}
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


@dataclass(frozen=True)
class Container:
    """What differs between a runner and the API server container."""

    name: str
    command: list[str]
    env: list[Obj]  # system variables first, then the user's
    requests: dict[str, Any]
    limits: dict[str, Any]
    gpu: bool
    # The startup budget and what the startup probe asks: a runner probes /readyz, so a model
    # still loading when the budget runs out gets its container restarted.
    startup_seconds: int = DEFAULT_STARTUP_SECONDS
    startup_path: str = "/livez"


def _probe(path: str, period: int, failures: int) -> Obj:
    return {
        "httpGet": {"path": path, "port": naming.PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def startup_failures(seconds: int) -> int:
    """Startup probe failures that fill `seconds` (at least one period)."""
    return max(1, -(-seconds // STARTUP_PERIOD_SECONDS))


def _pod_security(template: PodTemplate) -> Obj:
    restricted: Obj = {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return deep_merge(restricted, template.security_context or {})


CONTAINER_SECURITY: Obj = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


def _user_list(items: list[Any], reserved: str, attribute: str) -> list[Obj]:
    dumped = [i.model_dump(by_alias=True, exclude_none=True) for i in items]
    return [d for d in dumped if d[attribute] != reserved]


def _resources(template: PodTemplate, container: Container) -> Obj:
    defaults = template.resources
    requests = {**(defaults.requests if defaults else {}), **container.requests}
    limits = {**(defaults.limits if defaults else {}), **container.limits}
    out: Obj = {}
    if requests:
        out["requests"] = dict(sorted(requests.items()))
    if limits:
        out["limits"] = dict(sorted(limits.items()))
    return out


def pod_template(
    spec: RunnerServiceSpec,
    template: PodTemplate,
    labels: dict[str, str],
    container: Container,
) -> Obj:
    """The Deployment's `spec.template`, with the merged podTemplate applied."""
    main: Obj = {
        "name": container.name,
        "image": spec.image,
        "command": container.command,
        "ports": [{"name": naming.PORT_NAME, "containerPort": naming.PORT, "protocol": "TCP"}],
        "env": container.env,
        "resources": _resources(template, container),
        "readinessProbe": _probe("/readyz", 5, 3),
        "livenessProbe": _probe("/livez", 10, 3),
        "startupProbe": _probe(
            container.startup_path,
            STARTUP_PERIOD_SECONDS,
            startup_failures(container.startup_seconds),
        ),
        "securityContext": CONTAINER_SECURITY,
        # A container that fails before it logs a traceback's last line still has one: the
        # tail of its log becomes the termination message, which status reports.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_SECONDS}}},
        "volumeMounts": [
            {"name": TMP_VOLUME, "mountPath": TMP_PATH},
            *_user_list(template.volume_mounts, TMP_PATH, "mountPath"),
        ],
    }
    if spec.image_pull_policy is not None:
        main["imagePullPolicy"] = spec.image_pull_policy
    tolerations = [t.model_dump(by_alias=True, exclude_none=True) for t in template.tolerations]
    if container.gpu:
        tolerations = merge_by_key(
            [GPU_TOLERATION], tolerations, lambda t: (t.get("key"), t.get("effect"))
        )
    pod: Obj = {
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": _pod_security(template),
        "containers": [main],
        "volumes": [
            {"name": TMP_VOLUME, "emptyDir": {}},
            *_user_list(template.volumes, TMP_VOLUME, "name"),
        ],
    }
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s.name} for s in spec.image_pull_secrets]
    if tolerations:
        pod["tolerations"] = tolerations
    if template.node_selector:
        pod["nodeSelector"] = dict(sorted(template.node_selector.items()))
    if template.affinity:
        pod["affinity"] = template.affinity
    if template.service_account_name:
        pod["serviceAccountName"] = template.service_account_name
    # The operator's labels win: they carry the Deployment's selector.
    pod_labels = {**template.labels, **labels}
    annotations = {**template.annotations, **PROMETHEUS_ANNOTATIONS}
    return {
        "metadata": {
            "labels": dict(sorted(pod_labels.items())),
            "annotations": dict(sorted(annotations.items())),
        },
        "spec": pod,
    }

"""The `RunnerService` API (`kuberunner.io/v1alpha1`) as pydantic models.

These models are the single source of truth: the CRD schema (`crd.py`), the CRD reference
(`docs/crd-reference.md`) and the operator's parsing all come from them. Field descriptions
become the texts `kubectl explain` shows. Cross-field rules live twice on purpose: as CEL
`x-kubernetes-validations` (the API server rejects bad objects) and as pydantic validators
(the operator never trusts an object written before a CRD upgrade).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

API_GROUP = "kuberunner.io"
API_VERSION = "v1alpha1"
KIND = "RunnerService"
PLURAL = "runnerservices"
SINGULAR = "runnerservice"
SHORT_NAMES = ("rsvc",)
GPU_RESOURCE = "nvidia.com/gpu"
MAX_RUNNERS = 32
# Bounds on lists and maps keep the API server's CEL cost estimate within budget.
MAX_LIST = 64
MAX_ENV = 256

# The library's Tag rule for runner names (already lowercased: the API never rewrites input).
RUNNER_NAME_PATTERN = r"^[a-z0-9]([-._a-z0-9]*[a-z0-9])?$"
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
IMPORT_REF_PATTERN = rf"^{_DOTTED}:{_DOTTED}$"
METHOD_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
# A non-negative Kubernetes quantity (`500m`, `2`, `1.5`, `4Gi`, `1e3`).
QUANTITY_PATTERN = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
INT_OR_PERCENT_PATTERN = r"^([0-9]+%?)$"
# A Go duration without sign (`90s`, `10m`, `1h30m`, `1.5h`): what CEL's duration() parses.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DEFAULT_STARTUP_TIMEOUT = "10m"
DEFAULT_PROGRESS_DEADLINE = "10m"

# int-or-string schemas in the exact shape the API server expects for a structural CRD.
# Strict ints: in lax mode "-1" would be coerced to the int -1 and skip the string pattern.
NonNegativeInt = Annotated[int, Field(ge=0, strict=True)]
Quantity = Annotated[
    NonNegativeInt | Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN)],
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "minimum": 0,
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
IntOrPercent = Annotated[
    Annotated[int, Field(ge=0)] | Annotated[str, StringConstraints(pattern=INT_OR_PERCENT_PATTERN)],
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "minimum": 0,
            "pattern": INT_OR_PERCENT_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
# Kubernetes objects we pass through untouched (affinity, HPA metrics, EnvVarSource...).
FreeForm = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]


def _cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


def duration_seconds(text: str) -> float:
    """Seconds in a duration matching DURATION_PATTERN (ValueError otherwise)."""
    if not re.match(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration such as 90s, 10m or 1h30m")
    return sum(float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text))


def _bounded(name: str, low: str, high: str) -> Callable[[str], str]:
    lo, hi = duration_seconds(low), duration_seconds(high)

    def check(value: str) -> str:
        if not lo <= duration_seconds(value) <= hi:
            raise ValueError(f"{name} must be between {low} and {high}, not {value}")
        return value

    return check


def _duration_schema(name: str, low: str, high: str) -> JsonDict:
    # The CEL rule is guarded by the pattern so that an unparsable value gets the pattern's
    # message rather than a CEL evaluation error.
    pattern = DURATION_PATTERN.replace("\\", "\\\\")
    rule = (
        f"!self.matches('{pattern}') || "
        f"(duration(self) >= duration('{low}') && duration(self) <= duration('{high}'))"
    )
    return {
        "type": "string",
        "pattern": DURATION_PATTERN,
        "maxLength": 32,
        "x-kubernetes-validations": [_cel(rule, f"{name} must be between {low} and {high}")],
    }


# Duration fields, checked by the API server (pattern and CEL) and again by pydantic (objects
# written before a CRD upgrade).
StartupTimeout = Annotated[
    str,
    StringConstraints(pattern=DURATION_PATTERN, max_length=32),
    AfterValidator(_bounded("startupTimeout", "10s", "24h")),
    WithJsonSchema(_duration_schema("startupTimeout", "10s", "24h")),
]
ProgressDeadline = Annotated[
    str,
    StringConstraints(pattern=DURATION_PATTERN, max_length=32),
    AfterValidator(_bounded("progressDeadline", "5s", "24h")),
    WithJsonSchema(_duration_schema("progressDeadline", "5s", "24h")),
]


class ApiModel(BaseModel):
    """Base of every spec model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class PassThroughModel(BaseModel):
    """A Kubernetes type we only need a few named fields of; the rest is kept as written."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        frozen=True,
    )


# --- small Kubernetes types -------------------------------------------------------------


# Kubernetes' relaxed env var name rule (the default since 1.32, the only one in 1.36): one or
# more printable ASCII characters (space to '~'), '=' excepted.
ENV_NAME_PATTERN = r"^[ -<>-~]+$"


class EnvVar(ApiModel):
    """An environment variable of the container, exactly as in a Pod's `env`."""

    name: str = Field(
        min_length=1,
        pattern=ENV_NAME_PATTERN,
        description="Name of the environment variable: printable ASCII characters except '='.",
    )
    value: str | None = Field(
        default=None, description="Literal value. Mutually exclusive with valueFrom."
    )
    value_from: FreeForm | None = Field(
        default=None,
        description=(
            "Source of the value (secretKeyRef, configMapKeyRef, fieldRef, "
            "resourceFieldRef), passed to the Pod unchanged."
        ),
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!(has(self.value) && has(self.valueFrom))",
                    "value and valueFrom are mutually exclusive",
                )
            ]
        }
    )

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError(f"env {self.name}: value and valueFrom are mutually exclusive")
        return self


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace, by name."""

    name: str = Field(min_length=1, description="Name of the referenced object.")


class Toleration(ApiModel):
    """A Pod toleration, as in `spec.tolerations` of a Pod."""

    key: str | None = Field(default=None, description="Taint key; empty matches all keys.")
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (the Kubernetes default is Equal)."
    )
    value: str | None = Field(default=None, description="Taint value for the Equal operator.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, description="For NoExecute: how long the Pod stays bound after the taint."
    )


class Volume(PassThroughModel):
    """A Pod volume. Only `name` is checked; the source fields are passed to the Pod unchanged."""

    name: str = Field(
        min_length=1, description="Volume name; the runner's volume replaces one of the same name."
    )


class VolumeMount(PassThroughModel):
    """A container volume mount; every field of a Kubernetes VolumeMount is accepted."""

    name: str = Field(min_length=1, description="Name of the volume to mount.")
    mount_path: str = Field(
        min_length=1,
        description="Path in the container; the runner's mount replaces one at the same path.",
    )


class ContainerResources(ApiModel):
    """Default container requests and limits, under the runner's own `resources`."""

    requests: dict[str, Quantity] = Field(
        default_factory=dict,
        description="Default requests (for example memory, ephemeral-storage).",
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict, description="Default limits (for example memory, ephemeral-storage)."
    )


class PodTemplate(ApiModel):
    """Pod settings. On the service they apply to every pod; a runner's or the API server's
    own podTemplate is merged over it field by field: maps merge (the inner value wins per
    key), env, volumes merge by name, volumeMounts by mountPath, tolerations by key and effect,
    securityContext and affinity merge recursively, and scalars are replaced."""

    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra Pod labels (the operator's own labels win)."
    )
    annotations: dict[str, str] = Field(default_factory=dict, description="Extra Pod annotations.")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the Pod must be scheduled on."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=MAX_LIST,
        description="Extra tolerations (GPU runners always tolerate nvidia.com/gpu taints).",
    )
    affinity: FreeForm | None = Field(
        default=None, description="A Kubernetes Affinity object, passed to the Pod."
    )
    volumes: list[Volume] = Field(
        default_factory=list,
        max_length=MAX_LIST,
        description="Extra Pod volumes (the name `tmp` is reserved).",
    )
    volume_mounts: list[VolumeMount] = Field(
        default_factory=list,
        max_length=MAX_LIST,
        description="Extra mounts in the main container (not at /tmp).",
    )
    service_account_name: str | None = Field(
        default=None, description="ServiceAccount the Pod runs as."
    )
    security_context: FreeForm | None = Field(
        default=None,
        description=(
            "PodSecurityContext merged over the restricted default "
            "(non-root uid 65532, seccomp RuntimeDefault)."
        ),
    )
    resources: ContainerResources | None = Field(
        default=None, description="Default container requests and limits."
    )


# --- runner parts ------------------------------------------------------------------------


class RunnerResources(ApiModel):
    """What one runner pod gets. The scheduling strategy turns it into the worker count and
    each worker's CUDA_VISIBLE_DEVICES and thread environment."""

    cpu: Quantity | None = Field(
        default=None,
        description=(
            "CPU request of the pod as a Kubernetes quantity (`500m`, `2`). CPU workers: "
            "ceil(cpu) x workersPerResource, or workersPerResource when multi-threaded."
        ),
    )
    memory: Quantity | None = Field(
        default=None,
        description="Memory request and limit of the pod as a Kubernetes quantity (`4Gi`).",
    )
    nvidia_gpu: int | None = Field(
        default=None,
        alias=GPU_RESOURCE,
        ge=1,
        description=(
            "Whole GPUs per pod (set as the nvidia.com/gpu limit). GPU workers: "
            "ceil(gpus x workersPerResource)."
        ),
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "has(self.cpu) || has(self.nvidia__dot__com__slash__gpu)",
                    "resources must set cpu or nvidia.com/gpu",
                )
            ]
        }
    )

    @model_validator(mode="after")
    def _cpu_or_gpu(self) -> RunnerResources:
        if self.cpu is None and self.nvidia_gpu is None:
            raise ValueError("resources must set cpu or nvidia.com/gpu")
        return self


class Batching(ApiModel):
    """Adaptive batching of the runner's batchable methods."""

    enabled: bool | None = Field(default=None, description="Batch requests (default true).")
    max_batch_size: int | None = Field(
        default=None, ge=1, description="Largest batch a worker runs at once (default 100)."
    )
    max_latency_ms: int | None = Field(
        default=None,
        ge=1,
        description="Latency budget of a request in ms, queueing included (default 60000).",
    )


class MethodBatching(ApiModel):
    """Batching limits of one method, over the runner's `batching`."""

    max_batch_size: int | None = Field(
        default=None, ge=1, description="Largest batch of this method."
    )
    max_latency_ms: int | None = Field(
        default=None, ge=1, description="Latency budget of this method in milliseconds."
    )


class Autoscaling(ApiModel):
    """A HorizontalPodAutoscaler (autoscaling/v2) that owns the replica count."""

    min_replicas: int = Field(default=1, ge=1, description="Lower bound of replicas.")
    max_replicas: int = Field(ge=1, description="Upper bound of replicas.")
    metrics: list[FreeForm] | None = Field(
        default=None,
        max_length=MAX_LIST,
        description=(
            "autoscaling/v2 MetricSpec list passed to the HPA unchanged "
            "(default: 80% average CPU utilization)."
        ),
    )
    behavior: FreeForm | None = Field(
        default=None,
        description="autoscaling/v2 HorizontalPodAutoscalerBehavior passed to the HPA unchanged.",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.minReplicas <= self.maxReplicas",
                    "minReplicas must be less than or equal to maxReplicas",
                    ".minReplicas",
                )
            ]
        }
    )

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must be less than or equal to maxReplicas")
        return self


class DisruptionBudget(ApiModel):
    """A PodDisruptionBudget (policy/v1) for the runner's pods; set exactly one field."""

    min_available: IntOrPercent | None = Field(
        default=None, description="Pods (or percent) that must stay available during evictions."
    )
    max_unavailable: IntOrPercent | None = Field(
        default=None, description="Pods (or percent) that may be unavailable during evictions."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "has(self.minAvailable) != has(self.maxUnavailable)",
                    "set exactly one of minAvailable and maxUnavailable",
                )
            ]
        }
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> DisruptionBudget:
        if (self.min_available is None) == (self.max_unavailable is None):
            raise ValueError("set exactly one of minAvailable and maxUnavailable")
        return self


class Rollout(ApiModel):
    """Deployment update strategy. Default: RollingUpdate with maxSurge 25% and
    maxUnavailable 25%, except GPU runners, which use maxSurge 0 and maxUnavailable 1 so an
    update never waits for GPUs that the old pods hold."""

    type: Literal["RollingUpdate", "Recreate"] = Field(
        default="RollingUpdate", description="RollingUpdate or Recreate."
    )
    max_surge: IntOrPercent | None = Field(
        default=None, description="Extra pods during a rolling update (count or percent)."
    )
    max_unavailable: IntOrPercent | None = Field(
        default=None, description="Pods that may be down during a rolling update."
    )
    progress_deadline: ProgressDeadline | None = Field(
        default=None,
        description=(
            "How long a new revision may make no progress before the runner reports "
            f"RolloutStalled (the Deployment's progressDeadlineSeconds; default "
            f"{DEFAULT_PROGRESS_DEADLINE}). A duration such as 90s, 10m or 1h."
        ),
    )
    auto_rollback: bool = Field(
        default=False,
        description=(
            "When a new revision stalls, return the runner's Deployment to the last revision "
            "that was Ready (status.runners[].lastReadyRevision) and report RolledBack. The "
            "RunnerService's spec is not edited: it keeps asking for the failed revision until "
            "you change it."
        ),
    )

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.type == 'RollingUpdate' || "
                    "(!has(self.maxSurge) && !has(self.maxUnavailable))",
                    "maxSurge and maxUnavailable apply only to RollingUpdate",
                )
            ]
        }
    )

    @model_validator(mode="after")
    def _rolling_only(self) -> Rollout:
        if self.type == "Recreate" and (
            self.max_surge is not None or self.max_unavailable is not None
        ):
            raise ValueError("maxSurge and maxUnavailable apply only to RollingUpdate")
        return self


class RunnerSpec(ApiModel):
    """One runner: a Deployment of pods serving a Runnable class, with a ClusterIP Service."""

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=RUNNER_NAME_PATTERN,
        description=(
            "Runner name, as given to Runner(name=...): lowercase alphanumerics, '-', '_' "
            "or '.', starting and ending alphanumeric, at most 63 characters."
        ),
    )
    runnable: str = Field(
        pattern=IMPORT_REF_PATTERN,
        max_length=512,
        description="The Runnable class inside the image, as `module.path:ClassName`.",
    )
    supported_resources: list[Literal["cpu", "nvidia.com/gpu"]] = Field(
        default=["cpu"],
        min_length=1,
        max_length=2,
        description="The Runnable's SUPPORTED_RESOURCES (the operator never imports user code).",
    )
    supports_cpu_multi_threading: bool = Field(
        default=False, description="The Runnable's SUPPORTS_CPU_MULTI_THREADING."
    )
    resources: RunnerResources = Field(description=RunnerResources.__doc__)
    workers_per_resource: Annotated[
        float, WithJsonSchema({"type": "number", "exclusiveMinimum": 0})
    ] = Field(
        default=1,
        gt=0,
        description=(
            "Worker processes per resource unit. A number, not an integer, because "
            "fractions are meaningful: 0.5 gives each worker two GPUs."
        ),
    )
    batching: Batching | None = Field(default=None, description=Batching.__doc__)
    methods: dict[str, MethodBatching] = Field(
        default_factory=dict,
        max_length=MAX_LIST,
        description="Per-method batching limits, keyed by method name.",
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    f"self.all(m, m.matches('{METHOD_NAME_PATTERN}'))",
                    "method names must be Python identifiers",
                )
            ]
        },
    )
    replicas: int = Field(
        default=1, ge=0, description="Pods of this runner; ignored when autoscaling is set."
    )
    autoscaling: Autoscaling | None = Field(default=None, description=Autoscaling.__doc__)
    disruption_budget: DisruptionBudget | None = Field(
        default=None, description=DisruptionBudget.__doc__
    )
    rollout: Rollout | None = Field(default=None, description=Rollout.__doc__)
    startup_timeout: StartupTimeout | None = Field(
        default=None,
        description=(
            "How long a pod may take to load its model: the startup probe (on /readyz) fails "
            "the container after this long without every worker loaded, and the kubelet "
            f"restarts it. Default {DEFAULT_STARTUP_TIMEOUT}. A duration such as 90s, 10m or 1h."
        ),
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=MAX_ENV,
        description="Environment of this runner, merged by name over the service's env.",
    )
    pod_template: PodTemplate | None = Field(
        default=None, description="Pod settings of this runner, merged over the service's."
    )

    @model_validator(mode="after")
    def _method_names(self) -> RunnerSpec:
        for method in self.methods:
            if not re.match(METHOD_NAME_PATTERN, method):
                raise ValueError(f"method name {method!r} is not a Python identifier")
        return self


class ApiServerResources(ApiModel):
    """Requests of the API server pod."""

    cpu: Quantity | None = Field(default=None, description="CPU request (`500m`, `1`).")
    memory: Quantity | None = Field(default=None, description="Memory request and limit (`1Gi`).")


class ApiServerSpec(ApiModel):
    """The API server (the legacy `Service`): a Deployment and Service whose pods reach the
    runners through KUBERUNNER_RUNNER_MAP."""

    service: str = Field(
        pattern=IMPORT_REF_PATTERN,
        max_length=512,
        description="The Service object inside the image, as `module.path:svc`.",
    )
    replicas: int = Field(
        default=1, ge=0, description="Pods of the API server; ignored when autoscaling is set."
    )
    autoscaling: Autoscaling | None = Field(default=None, description=Autoscaling.__doc__)
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=MAX_ENV,
        description="Environment, merged by name over the service's env.",
    )
    pod_template: PodTemplate | None = Field(
        default=None, description="Pod settings of the API server, merged over the service's."
    )
    resources: ApiServerResources | None = Field(
        default=None, description=ApiServerResources.__doc__
    )


class RunnerServiceSpec(ApiModel):
    """Desired state of a RunnerService: an image, its runners and an optional API server."""

    image: str = Field(
        min_length=1, description="Container image holding the runnables (and the service)."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Image pull policy of every container."
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list, max_length=MAX_LIST, description="Secrets for pulling the image."
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=MAX_ENV,
        description="Environment of every pod (valueFrom is passed through unchanged).",
    )
    pod_template: PodTemplate | None = Field(default=None, description=PodTemplate.__doc__)
    runners: list[RunnerSpec] = Field(
        min_length=1,
        max_length=MAX_RUNNERS,
        description="The runners; names are unique.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "x-kubernetes-validations": [
                _cel(
                    "self.all(r, self.filter(s, s.name.lowerAscii() == "
                    "r.name.lowerAscii()).size() == 1)",
                    "runner names must be unique (case-insensitively)",
                )
            ],
        },
    )
    api_server: ApiServerSpec | None = Field(default=None, description=ApiServerSpec.__doc__)

    @model_validator(mode="after")
    def _unique_names(self) -> RunnerServiceSpec:
        seen: set[str] = set()
        for runner in self.runners:
            key = runner.name.lower()
            if key in seen:
                raise ValueError(f"runner name {runner.name!r} is used twice")
            seen.add(key)
        return self


# --- status ------------------------------------------------------------------------------


class StatusModel(BaseModel):
    """Base of status models: camelCase, and unknown fields ignored (status is rebuilt anyway)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class Condition(StatusModel):
    """A condition in the metav1.Condition shape."""

    type: str = Field(max_length=316, description="Condition type: Ready, Progressing or Degraded.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        max_length=1024,
        pattern=CONDITION_REASON_PATTERN,
        description="One-word CamelCase reason.",
    )
    message: str = Field(default="", max_length=32768, description="Human-readable details.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition was computed from."
    )


class WorkerSummary(StatusModel):
    """What one worker process of a pod sees (never Secret values: only strategy settings)."""

    index: int = Field(description="Worker index (the key of KUBERUNNER_WORKER_ENV_MAP).")
    cuda_visible_devices: str | None = Field(
        default=None, description="CUDA_VISIBLE_DEVICES of the worker (-1 for CPU workers)."
    )
    threads: int | None = Field(default=None, description="Thread count of the worker.")


class StartupStatus(StatusModel):
    """How the newest pod of a runner started: when each phase ended (RFC 3339), from its pod
    conditions and container states and, for `started`, the runner's /readyz answer."""

    pod: str = Field(description="The newest pod of the runner.")
    created: str | None = Field(default=None, description="When the pod was created.")
    scheduled: str | None = Field(
        default=None, description="When the scheduler bound the pod (PodScheduled)."
    )
    image_pulled: str | None = Field(
        default=None,
        description=(
            "When the container was created, right after its image was pulled (the first "
            "startedAt of the container)."
        ),
    )
    started: str | None = Field(
        default=None,
        description=(
            "When the runner server started loading its workers (its /readyz answer), else "
            "the container's start."
        ),
    )
    workers_ready: str | None = Field(
        default=None, description="When every worker had loaded (the pod's Ready condition)."
    )
    phase: str | None = Field(
        default=None,
        description=(
            "The phase under way when the pod is not ready yet: scheduling, image pull, "
            "container start or model load."
        ),
    )
    slowest_phase: str | None = Field(
        default=None, description="The phase that took (or is taking) longest."
    )
    slowest_seconds: int | None = Field(
        default=None, description="How long the slowest phase took so far, in seconds."
    )


class RolledBackStatus(StatusModel):
    """The runner was returned to its last Ready revision after a new one stalled."""

    generation: int = Field(description="RunnerService generation whose rollout failed.")
    failed_revision: int | None = Field(
        default=None, description="Deployment revision that stalled."
    )
    revision: int = Field(description="Deployment revision the runner was returned to.")
    reason: str = Field(description="Why the failed revision stalled (a reason of this API).")
    message: str = Field(default="", description="Details of that reason.")


class ComponentStatus(StatusModel):
    """Observed state of a runner or of the API server."""

    name: str = Field(description="Runner name (`api-server` for the API server).")
    deployment: str | None = Field(default=None, description="Name of the Deployment.")
    service: str | None = Field(default=None, description="Name of the Service.")
    url: str | None = Field(default=None, description="In-cluster URL of the Service.")
    workers: int | None = Field(default=None, description="Worker processes per pod.")
    gpus_per_pod: int | None = Field(default=None, description="GPUs requested by each pod.")
    worker_env: list[WorkerSummary] = Field(
        default_factory=list, description="Per-worker device and thread settings."
    )
    desired_replicas: int | None = Field(default=None, description="Pods wanted.")
    ready_replicas: int = Field(default=0, description="Pods ready.")
    updated_replicas: int = Field(default=0, description="Pods at the current template.")
    available_replicas: int = Field(default=0, description="Pods available.")
    autoscaled: bool = Field(default=False, description="An HPA owns the replica count.")
    ready: bool = Field(default=False, description="All desired pods are ready and updated.")
    reason: str | None = Field(default=None, description="Why the component is not ready.")
    message: str | None = Field(default=None, description="Details of the reason.")
    summary: str | None = Field(
        default=None,
        description="One line for people: `ready`, or e.g. `starting: workers 1/2 ready, "
        "38s in model load`.",
    )
    startup: StartupStatus | None = Field(default=None, description=StartupStatus.__doc__)
    revision: int | None = Field(
        default=None, description="The Deployment's current revision (what runs or rolls out)."
    )
    last_ready_revision: int | None = Field(
        default=None,
        description="The last Deployment revision whose pods were all ready (autoRollback "
        "returns to it).",
    )
    last_ready_generation: int | None = Field(
        default=None, description="The RunnerService generation of lastReadyRevision."
    )
    rolled_back: RolledBackStatus | None = Field(
        default=None,
        description="Set while the runner runs its last Ready revision instead of the spec's.",
    )


class RunnerServiceStatus(StatusModel):
    """Observed state of a RunnerService, written by the operator only."""

    observed_generation: int | None = Field(
        default=None, description="metadata.generation this status was computed from."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Progressing and Degraded.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    runners: list[ComponentStatus] = Field(
        default_factory=list, description="One entry per runner, in spec order."
    )
    api_server: ComponentStatus | None = Field(
        default=None, description="The API server, when spec.apiServer is set."
    )
    ready_runners: str | None = Field(
        default=None, description="Ready runners out of all runners, as `ready/total`."
    )
    workers: int | None = Field(
        default=None, description="Worker processes over all runner pods wanted."
    )
    gpus: int | None = Field(default=None, description="GPUs over all runner pods wanted.")
    summary: str | None = Field(
        default=None,
        description="One line for people: `ready`, or the first runner that is not, e.g. "
        "`runner a: starting: workers 1/2 ready, 38s in model load`.",
    )

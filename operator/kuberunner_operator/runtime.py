"""The operator-wide context every handler and worker shares."""

from __future__ import annotations

from dataclasses import dataclass, field

from kuberunner_operator.cache import Cache
from kuberunner_operator.health import Activity
from kuberunner_operator.kube import KubeClient
from kuberunner_operator.settings import OperatorConfig
from kuberunner_operator.workqueue import WorkQueue


@dataclass
class Runtime:
    """Handed to kopf as the memo (shared, never copied)."""

    config: OperatorConfig
    kube: KubeClient
    activity: Activity
    cache: Cache = field(default_factory=Cache)
    queue: WorkQueue = field(default_factory=WorkQueue)

    def __copy__(self) -> Runtime:
        return self

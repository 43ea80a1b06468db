"""kuberunner: BentoML-style runners (Runnable, Runner, Strategy), Kubernetes-native."""

from kuberunner import resources
from kuberunner.exceptions import (
    ConfigError,
    InvalidArgument,
    KuberunnerException,
    NotFound,
    RemoteException,
    ResourceError,
    ServiceUnavailable,
    StateException,
)
from kuberunner.runnable import Runnable, RunnableMethod, RunnableMethodConfig
from kuberunner.runner import AbstractRunner, Runner, RunnerMethod
from kuberunner.service import Service
from kuberunner.strategy import DefaultStrategy, Strategy

__version__ = "0.1.0"

__all__ = [
    "AbstractRunner",
    "ConfigError",
    "DefaultStrategy",
    "InvalidArgument",
    "KuberunnerException",
    "NotFound",
    "RemoteException",
    "ResourceError",
    "Runnable",
    "RunnableMethod",
    "RunnableMethodConfig",
    "Runner",
    "RunnerMethod",
    "Service",
    "ServiceUnavailable",
    "StateException",
    "Strategy",
    "__version__",
    "resources",
]

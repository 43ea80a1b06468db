"""Runner handles: where a Runner's calls go (nowhere yet, this process, or a runner server)."""

from kuberunner.handles.base import RunnerHandle
from kuberunner.handles.dummy import DummyRunnerHandle
from kuberunner.handles.local import LocalRunnerHandle

__all__ = ["DummyRunnerHandle", "LocalRunnerHandle", "RunnerHandle"]

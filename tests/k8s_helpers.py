"""Helpers for tests that talk to the dev cluster (the `cluster` fixture in conftest.py).

    from k8s_helpers import kubectl, kubectl_json, apply, wait_for

    def test_something(cluster, fresh_namespace):
        apply(cluster, {"apiVersion": "v1", "kind": "ConfigMap", ...}, namespace=fresh_namespace)
        pods = kubectl_json(cluster, "get", "pods", "-n", fresh_namespace)
        wait_for(lambda: kubectl_json(cluster, "get", "pod", "p", "-n", ns)["status"]["phase"]
                 == "Running", timeout=30)

`kubectl` is the project's own v1.36 binary (the machine's may be too old for the server).
"""

from __future__ import annotations

import functools
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kuberunner_dev.cluster import ClusterInfo
from kuberunner_dev.cluster.binaries import locate

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call; its message includes kubectl's stderr and stdout."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {self.stderr}\nstdout: {self.output}"


@functools.cache
def kubectl_path() -> Path:
    """The cached kubectl v1.36.2 binary (built by hack/build-tools.sh if missing)."""
    return locate(("kubectl",))["kubectl"]


def kubectl(
    cluster: ClusterInfo,
    *args: str,
    check: bool = True,
    input: str | None = None,  # same name as subprocess.run's
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run `kubectl --kubeconfig <cluster's admin kubeconfig> *args`; text output captured.

    With check=True a non-zero exit raises KubectlError (showing stderr)."""
    argv = [str(kubectl_path()), f"--kubeconfig={cluster.kubeconfig}", *args]
    done = subprocess.run(
        argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise KubectlError(done.returncode, argv, done.stdout, done.stderr)
    return done


def kubectl_json(cluster: ClusterInfo, *args: str) -> Any:
    """Run a read command (`get ...`) with `-o json` and return the parsed object. Parsed as
    JSON, not YAML: YAML refuses characters JSON carries (fuzzed names hold control codes)."""
    return json.loads(kubectl(cluster, *args, "-o", "json").stdout)


def apply(
    cluster: ClusterInfo, *objects: dict[str, Any] | str, namespace: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`kubectl apply -f -` of manifests given as dicts or YAML text."""
    text = "\n---\n".join(o if isinstance(o, str) else yaml.safe_dump(o) for o in objects)
    ns = ["-n", namespace] if namespace else []
    return kubectl(cluster, "apply", *ns, "-f", "-", input=text)


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 30.0,
    interval: float = 0.2,
    message: str = "condition",
) -> T:
    """Call `predicate` until it returns something truthy, and return that.

    An AssertionError inside `predicate` fails the test at once: an assert in a waited-for
    check states something that must hold on every poll. Other exceptions (a 404 before an
    object exists, a connection refused while a server starts) count as "not yet". On
    timeout, TimeoutError names `message` and shows the last value or exception, which is
    usually what explains the failure."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except AssertionError:
            raise
        except Exception as exc:  # "not yet"; reported if it never succeeds
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}; last: {last!r}")
        time.sleep(interval)

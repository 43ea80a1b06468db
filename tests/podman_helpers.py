"""Podman plumbing for the image tests: build the images, run containers, wait for HTTP.

Everything goes through `hack/build-images.sh`'s private podman store (`CONTAINERS_CONF` and
`CONTAINERS_STORAGE_CONF` under ~/.cache/kuberunner/containers), never the host's global one.
Containers started here are always removed again (`Container.remove` checks that it is gone).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "hack" / "build-images.sh"
RUNNER_IMAGE = "localhost/kuberunner-runner:dev"
OPERATOR_IMAGE = "localhost/kuberunner-operator:dev"
BASE_IMAGE = "localhost/kuberunner-base:bookworm"
UID = 65532

# Flags every `podman run` of the tests uses: runc (crun rejects the hosts' hybrid cgroups) and
# host network (servers bind 127.0.0.1 only). INIT adds an init that forwards SIGTERM and reaps.
RUN_FLAGS = ("--runtime", "runc", "--network", "host")
INIT = ("--init",)


def podman_env() -> dict[str, str]:
    """The environment for podman: the process env plus the script's CONTAINERS_* variables."""
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-env"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    env = dict(os.environ)
    for line in out.splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    return env


_ENV: dict[str, str] | None = None


def _env() -> dict[str, str]:
    global _ENV
    if _ENV is None:
        _ENV = podman_env()
    return _ENV


def podman(
    *args: str, check: bool = True, timeout: float = 120, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `podman ARGS...` against the private store; raise with its output when it fails."""
    proc = subprocess.run(
        ["podman", *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input_text,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


@dataclass(frozen=True)
class BuildResult:
    seconds: float
    log: str


def build_images(targets: Sequence[str] = ("runner", "operator")) -> BuildResult:
    """Build (or reuse from cache) the images with the project's script."""
    env = dict(os.environ, KUBERUNNER_TARGETS=" ".join(targets))
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    if proc.returncode != 0:
        raise AssertionError(f"build-images.sh exited {proc.returncode}:\n{proc.stderr}")
    return BuildResult(time.monotonic() - start, proc.stderr)


def image_inspect(image: str) -> dict[str, Any]:
    data = json.loads(podman("image", "inspect", image).stdout)
    assert isinstance(data, list)
    assert len(data) == 1
    entry = data[0]
    assert isinstance(entry, dict)
    return entry


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    headers: dict[str, str]  # names lowercased

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> HttpResponse:
    """One HTTP request with the standard library; HTTP error statuses are returned, not raised."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return HttpResponse(
                resp.status, resp.read(), {k.lower(): v for k, v in resp.headers.items()}
            )
    except urllib.error.HTTPError as err:
        return HttpResponse(err.code, err.read(), {k.lower(): v for k, v in err.headers.items()})


def wait_for_status(url: str, status: int = 200, timeout: float = 60) -> float:
    """Poll GET `url` until it answers `status`; return the seconds it took."""
    start = time.monotonic()
    last = "no answer"
    while time.monotonic() - start < timeout:
        try:
            got = http("GET", url, timeout=2)
            if got.status == status:
                return time.monotonic() - start
            last = f"HTTP {got.status}: {got.body[:200]!r}"
        except (OSError, urllib.error.URLError) as exc:
            last = repr(exc)
        time.sleep(0.05)
    raise AssertionError(f"{url} did not answer {status} within {timeout} s (last: {last})")


@dataclass
class Container:
    """A detached container started by `run_container`."""

    name: str
    image: str
    removed: bool = field(default=False)

    def inspect(self) -> dict[str, Any]:
        data = json.loads(podman("container", "inspect", self.name).stdout)
        entry = data[0]
        assert isinstance(entry, dict)
        return entry

    def state(self) -> dict[str, Any]:
        state = self.inspect()["State"]
        assert isinstance(state, dict)
        return state

    def logs(self) -> str:
        proc = podman("logs", self.name, check=False)
        return proc.stdout + proc.stderr

    def exec(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *cmd, check=check)

    def stop(self, timeout: int = 10) -> float:
        """`podman stop` (SIGTERM, then SIGKILL after `timeout`); return the seconds it took."""
        start = time.monotonic()
        podman("stop", "--time", str(timeout), self.name, timeout=timeout + 30)
        return time.monotonic() - start

    def exists(self) -> bool:
        return podman("container", "exists", self.name, check=False).returncode == 0

    def remove(self) -> None:
        podman("rm", "--force", "--time", "2", self.name, check=False, timeout=60)
        assert not self.exists(), f"container {self.name} is still there after podman rm"
        self.removed = True


@contextmanager
def run_container(
    image: str,
    args: Sequence[str] = (),
    *,
    podman_args: Sequence[str] = (),
    entrypoint: str | None = None,
    init: bool = True,
) -> Iterator[Container]:
    """`podman run -d` the image with the tests' flags; the container is removed on exit.

    With `init=False` the image's entrypoint is PID 1, as under Kubernetes."""
    name = f"kuberunner-test-{uuid.uuid4().hex[:10]}"
    cmd = ["run", "--detach", "--name", name, *RUN_FLAGS, *(INIT if init else ()), *podman_args]
    if entrypoint is not None:
        cmd += ["--entrypoint", entrypoint]
    podman(*cmd, image, *args)
    container = Container(name, image)
    try:
        yield container
    finally:
        container.remove()


def run_once(
    image: str,
    args: Sequence[str] = (),
    *,
    podman_args: Sequence[str] = (),
    entrypoint: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`podman run --rm` to completion; returns the finished process (not checked)."""
    cmd = ["run", "--rm", *RUN_FLAGS, *INIT, *podman_args]
    if entrypoint is not None:
        cmd += ["--entrypoint", entrypoint]
    return podman(*cmd, image, *args, check=False, timeout=timeout)


def podman_available() -> bool:
    return shutil.which("podman") is not None

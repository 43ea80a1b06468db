"""Where the project's Kubernetes binaries are, building them when they are missing.

`hack/build-tools.sh` owns the versions and the cache layout; this module only asks it
(`--print`) and, when something is missing, runs it.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Environment override for the build script, e.g. when kuberunner is installed from a wheel.
SCRIPT_ENV = "KUBERUNNER_BUILD_TOOLS"

CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# The real node's binaries (build-tools.sh step `node`); `pause-image` is an OCI archive.
NODE = (
    "kubelet",
    "kube-proxy",
    "containerd",
    "ctr",
    "containerd-shim-runc-v2",
    "cni-bridge",
    "cni-host-local",
    "cni-loopback",
    "cni-portmap",
    "coredns",
    "pause-image",
)


class BinariesError(RuntimeError):
    pass


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of the cached tools, plus the kwok module directory (for stage files)."""

    paths: dict[str, Path]
    kwok_module: Path
    k8s_version: str
    pause_image_name: str = ""

    def __getitem__(self, name: str) -> Path:
        return self.paths[name]


def build_script() -> Path:
    """The repo's hack/build-tools.sh (next to this source tree) or $KUBERUNNER_BUILD_TOOLS."""
    override = os.environ.get(SCRIPT_ENV)
    if override:
        script = Path(override)
    else:
        # cluster/ -> kuberunner_dev/ -> devtools/ -> repository root
        script = Path(__file__).resolve().parents[3] / "hack" / "build-tools.sh"
    if not script.is_file():
        raise BinariesError(
            f"cannot find the tool build script at {script}. Run kuberunner from a checkout of "
            f"its repository, or set {SCRIPT_ENV} to the path of hack/build-tools.sh."
        )
    return script


def parse_print_output(text: str) -> Binaries:
    """Parse `build-tools.sh --print` (`name=value` lines)."""
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    try:
        module = Path(values.pop("kwok-module"))
        version = values.pop("k8s-version")
    except KeyError as exc:
        raise BinariesError(f"build-tools.sh --print gave no {exc} line:\n{text}") from exc
    pause_name = values.pop("pause-image-name", "")
    paths = {name: Path(path) for name, path in values.items()}
    return Binaries(paths, module, version, pause_name)


def _print_paths(script: Path) -> Binaries:
    done = subprocess.run(
        ["bash", str(script), "--print"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BinariesError(f"{script} --print failed:\n{done.stderr.strip()}")
    return parse_print_output(done.stdout)


def missing(binaries: Binaries, names: tuple[str, ...]) -> list[str]:
    def present(path: Path) -> bool:
        # The pause image is a data file; everything else must be executable.
        return path.is_file() if path.suffix == ".tar" else os.access(path, os.X_OK)

    return [n for n in names if not present(binaries.paths.get(n, Path("/nonexistent")))]


def locate(names: tuple[str, ...] = CONTROL_PLANE, build: bool = True) -> Binaries:
    """Paths of the binaries `names`; runs the (slow, cached) build first if any is missing."""
    script = build_script()
    binaries = _print_paths(script)
    absent = missing(binaries, names)
    if absent and build:
        # Output goes to our stderr: a cold build takes minutes and the user should see why.
        done = subprocess.run(["bash", str(script)], check=False)
        if done.returncode != 0:
            raise BinariesError(
                f"building {', '.join(absent)} failed (see the messages above); "
                f"retry with: bash {script}"
            )
        binaries = _print_paths(script)
        absent = missing(binaries, names)
    if absent:
        raise BinariesError(f"missing binaries {absent}; build them with: bash {script}")
    if not binaries.kwok_module.is_dir():
        raise BinariesError(f"kwok module directory {binaries.kwok_module} does not exist")
    return binaries

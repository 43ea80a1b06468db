"""Load images from the project's podman store into the real node's containerd.

Nothing on the node can pull from a registry, so pods run images loaded here, with
`imagePullPolicy: IfNotPresent` or `Never`. Each image is saved from the podman store that
hack/build-images.sh uses (`--print-env` gives its CONTAINERS_* variables) as a docker
archive, whose RepoTags name the image, and imported into containerd's `k8s.io` namespace,
the one the CRI (and so the kubelet) sees.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from kuberunner_dev.cluster.binaries import locate
from kuberunner_dev.cluster.node import NodeLayout
from kuberunner_dev.cluster.realnode import ctr, import_archive
from kuberunner_dev.cluster.state import DEFAULT_NAME, ClusterError, cluster_dir, load


def podman_env() -> dict[str, str]:
    """os.environ plus the CONTAINERS_* variables of the project's podman store."""
    script = Path(__file__).resolve().parents[3] / "hack" / "build-images.sh"
    done = subprocess.run(
        ["bash", str(script), "--print-env"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ClusterError(f"{script} --print-env failed: {done.stderr.strip()}")
    extra = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return {**os.environ, **extra}


def _save(image: str, archive: Path, env: dict[str, str]) -> None:
    done = subprocess.run(
        ["podman", "save", "--format", "docker-archive", "-o", str(archive), image],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ClusterError(
            f"podman save {image} failed: {done.stderr.strip()}. Build the project's images "
            "with `bash hack/build-images.sh` first."
        )


def load_images(
    images: Sequence[str],
    name: str = DEFAULT_NAME,
    *,
    clusters_dir: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> list[str]:
    """Copy `images` (e.g. localhost/kuberunner-runner:dev) from podman into the real node of
    cluster `name`. Returns the names containerd now lists for them."""
    directory = cluster_dir(name, clusters_dir)
    state = load(directory / "cluster.json")
    if state is None or not state.real_node:
        raise ClusterError(f"cluster {name} is not running with a real node")
    layout = NodeLayout(directory, state.name)
    bins = locate(("ctr",), build=False)
    env = podman_env()
    with tempfile.TemporaryDirectory(prefix="kuberunner-images-") as tmp:
        for image in images:
            archive = Path(tmp) / "image.tar"
            progress(f"saving {image} from podman")
            _save(image, archive, env)
            progress(f"importing {image} into containerd (k8s.io)")
            import_archive(bins, layout, archive)
            archive.unlink()
    listed = ctr(bins, layout, "images", "list", "--quiet").split()
    missing = [i for i in images if i not in listed]
    if missing:
        raise ClusterError(f"containerd does not list {missing} after import; it has {listed}")
    return list(images)

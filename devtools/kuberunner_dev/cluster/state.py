"""The on-disk record of a running dev cluster (`cluster.json` in its state directory)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kuberunner_dev.cluster.processes import ProcessRef

CLUSTERS_DIR_ENV = "KUBERUNNER_CLUSTERS_DIR"
DEFAULT_NAME = "kuberunner-dev"
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")


class ClusterError(RuntimeError):
    """A dev cluster could not be brought up, found, or stopped; the message says what to do."""


def clusters_dir(override: Path | None = None) -> Path:
    """Where cluster state lives: `override`, else $KUBERUNNER_CLUSTERS_DIR, else the user cache."""
    if override is not None:
        return override
    env = os.environ.get(CLUSTERS_DIR_ENV)
    if env:
        return Path(env)
    return Path.home() / ".cache" / "kuberunner" / "clusters"


def cluster_dir(name: str, override: Path | None = None) -> Path:
    if not _NAME_RE.match(name):
        raise ClusterError(
            f"invalid cluster name {name!r}: use lowercase letters, digits, '-', '.', '_' "
            "(at most 63, starting and ending with a letter or digit)"
        )
    return clusters_dir(override) / name


@dataclass
class ComponentRecord:
    name: str
    pid: int
    start_time: int
    health_url: str
    log: str

    @property
    def process(self) -> ProcessRef:
        return ProcessRef(self.pid, self.start_time)


@dataclass
class ClusterState:
    name: str
    server: str
    token: str
    ports: dict[str, int]
    nodes: list[str]
    components: list[ComponentRecord] = field(default_factory=list)
    # Set before the real node touches the host, so a failed `up` still cleans up after it.
    real_node: bool = False


def save(path: Path, state: ClusterState) -> None:
    """Write atomically, so a reader (or a `down` after a crash) never sees half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600, exist_ok=True)
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(path)


def load(path: Path) -> ClusterState | None:
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise ClusterError(f"{path} is corrupt ({exc}); remove its directory by hand") from exc
    raw["components"] = [ComponentRecord(**c) for c in raw.get("components", [])]
    return ClusterState(**raw)

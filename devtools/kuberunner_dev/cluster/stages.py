"""The kwok Stage configuration of a dev cluster.

Standalone kwok simulates nothing unless Stages arrive with `--config`. We take kwok's stock
"fast" stages straight from the kwok module in the Go module cache (so they always match the
kwok binary), exclude pods annotated `kuberunner.io/simulate` from the stock pod-ready stage,
and add our own stages (stages/simulate.yaml) that give those pods failure states.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

SIMULATE_ANNOTATION = "kuberunner.io/simulate"
SIMULATE_MODES = ("crashloop", "imagepull", "notready")

# Stock stage files, relative to the kwok module root (kwok v0.8.0 layout).
STOCK_STAGE_FILES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)

Stage = dict[str, Any]


class StageError(RuntimeError):
    pass


def load_stock_stages(kwok_module: Path) -> list[Stage]:
    """Read the stock stages from the kwok module directory."""
    stages: list[Stage] = []
    for rel in STOCK_STAGE_FILES:
        path = kwok_module / rel
        if not path.is_file():
            raise StageError(
                f"kwok stage file {path} not found; is {kwok_module} the kwok v0.8.0 module?"
            )
        stages.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return stages


def skip_simulated_pods(stage: Stage) -> Stage:
    """A copy of `stage` that never selects pods carrying the simulate annotation."""
    gated = copy.deepcopy(stage)
    selector = gated["spec"].setdefault("selector", {})
    selector.setdefault("matchExpressions", []).append(
        {"key": f'.metadata.annotations["{SIMULATE_ANNOTATION}"]', "operator": "DoesNotExist"}
    )
    return gated


def load_simulate_stages() -> list[Stage]:
    text = resources.files(__package__).joinpath("stages/simulate.yaml").read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


def build_stages(kwok_module: Path) -> list[Stage]:
    """Every Stage the dev cluster's kwok runs with."""
    stages = [
        skip_simulated_pods(stage) if stage["metadata"]["name"] == "pod-ready" else stage
        for stage in load_stock_stages(kwok_module)
    ]
    if not any(stage["metadata"]["name"] == "pod-ready" for stage in stages):
        raise StageError(f"no pod-ready stage among the stock stages of {kwok_module}")
    return stages + load_simulate_stages()


def render_stages(stages: list[Stage]) -> str:
    return yaml.safe_dump_all(stages, sort_keys=False)

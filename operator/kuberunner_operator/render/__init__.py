"""Pure rendering of a RunnerService into its child objects (see docs/contracts.md)."""

from kuberunner_operator.render.desired import DesiredComponent, Manifest, Rendered
from kuberunner_operator.render.runner_service import render_service

__all__ = ["DesiredComponent", "Manifest", "Rendered", "render_service"]

"""Pure rendering of a RunnerService into its child objects (see docs/contracts.md)."""

from kuberunner_operator.render.plan import Manifest, Rendered, RunnerPlan
from kuberunner_operator.render.runner_service import render_service

__all__ = ["Manifest", "Rendered", "RunnerPlan", "render_service"]

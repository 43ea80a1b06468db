"""Command groups of the operator side: `dev`, `operator`, `manifest`.

Only argparse wiring lives here; each command imports its heavy dependencies when it runs.
"""

from __future__ import annotations

import argparse

from kuberunner.cli import group_parser


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from kuberunner_operator.devcluster.commands import register_dev

    register_dev(groups)


__all__ = ["group_parser", "register"]

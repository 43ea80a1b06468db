"""The `dev` command group: `kuberunner dev cluster ...` and `kuberunner dev demo`."""

from __future__ import annotations

import argparse

from kuberunner_dev.cluster.commands import register_dev
from kuberunner_dev.demo import register_demo


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    register_demo(register_dev(groups))

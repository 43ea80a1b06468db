"""The `kuberunner` command line.

Each part of the project contributes its own command groups through a `register(subparsers)`
function, so this module stays small and the runner image (which has no operator dependencies)
still gets a working CLI: groups whose module cannot be imported are listed as unavailable.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from kuberunner import __version__

# Modules that add command groups. Operator-side groups need the `operator` extra.
COMMAND_PROVIDERS: tuple[str, ...] = (
    "kuberunner.server.commands",  # runner serve
    "kuberunner.api_server.commands",  # api serve
    "kuberunner_operator.commands",  # dev, operator, manifest
)

Handler = Callable[[argparse.Namespace], int]


def _print_group_help(parser: argparse.ArgumentParser) -> Handler:
    def show(_: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return show


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kuberunner",
        description="Run model-serving runners on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"kuberunner {__version__}")
    parser.set_defaults(func=_print_group_help(parser))
    groups = parser.add_subparsers(title="command groups", metavar="GROUP")
    for module_name in COMMAND_PROVIDERS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module_name.startswith(exc.name):
                raise
            continue  # that part is not installed in this environment
        module.register(groups)
    return parser


def group_parser(
    groups: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction[argparse.ArgumentParser]]:
    """Add a command group whose bare invocation prints its help."""
    parser = groups.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(func=_print_group_help(parser))
    return parser, parser.add_subparsers(title="commands", metavar="COMMAND")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.func
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())

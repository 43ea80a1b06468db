"""The `kuberunner` command line.

Each installed part of the project registers its own command groups as an entry point in the
`kuberunner.commands` group (`name = "module:register"`, where `register(subparsers)` adds them),
so this module names none of them. The runner image ships without the operator package: an entry
point whose module is not installed is skipped, and the CLI has only the groups that can run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from kuberunner import __version__

ENTRY_POINT_GROUP = "kuberunner.commands"

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
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            register = entry.load()
        except ModuleNotFoundError as exc:
            if exc.name is None or not entry.module.startswith(exc.name):
                raise  # a real import error inside an installed part
            continue  # that part is not installed in this environment
        register(groups)
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

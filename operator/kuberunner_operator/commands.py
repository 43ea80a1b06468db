"""Command groups of the operator side: `operator` and `manifest`.

Only argparse wiring lives here; each command imports its heavy dependencies when it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kuberunner.cli import group_parser

MANIFEST_HELP = """\
targets:
  crd             the RunnerService CRD (crds/runnerservices.kuberunner.io.yaml)
  crd-docs        the field reference page (docs/crd-reference.md)
  MODULE:svc      a ready RunnerService for the kuberunner.Service `svc` of MODULE (needs --image)
"""


def _write(text: str, output: str | None) -> None:
    if output is None or output == "-":
        sys.stdout.write(text)
        return
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _manifest(args: argparse.Namespace) -> int:
    target: str = args.target
    if target == "crd":
        from kuberunner_operator.crd import render_crd_yaml

        _write(render_crd_yaml(), args.output)
        return 0
    if target == "crd-docs":
        from kuberunner_operator.crd import render_crd_docs

        _write(render_crd_docs(), args.output)
        return 0
    if ":" not in target:
        print(f"kuberunner manifest: unknown target {target!r}\n\n{MANIFEST_HELP}", file=sys.stderr)
        return 2
    if not args.image:
        print("kuberunner manifest MODULE:svc: --image is required", file=sys.stderr)
        return 2
    from kuberunner_operator.manifest import ManifestError, service_manifest_yaml

    try:
        text = service_manifest_yaml(
            target, image=args.image, name=args.name, namespace=args.namespace
        )
    except ManifestError as exc:
        print(f"kuberunner manifest: {exc}", file=sys.stderr)
        return 1
    _write(text, args.output)
    return 0


def register_manifest(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # One positional instead of sub-commands, so `kuberunner manifest MODULE:svc` works.
    parser = groups.add_parser(
        "manifest",
        help="write the CRD, its reference page, or a RunnerService for a Service",
        description="Write the CRD, its reference page, or a RunnerService for a Service.",
        epilog=MANIFEST_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", metavar="TARGET", help="crd, crd-docs or MODULE:svc")
    parser.add_argument("-o", "--output", help="file to write (default: standard output)")
    parser.add_argument("--image", help="container image holding MODULE (MODULE:svc only)")
    parser.add_argument("--name", help="RunnerService name (default: the Service's name)")
    parser.add_argument("--namespace", help="metadata.namespace to set (default: none)")
    parser.set_defaults(func=_manifest)


def _run_operator(args: argparse.Namespace) -> int:
    from kuberunner_operator.main import run_operator

    return run_operator(args)


def register_operator(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _, commands = group_parser(groups, "operator", "run the RunnerService operator")
    run = commands.add_parser(
        "run",
        help="reconcile RunnerServices (KUBECONFIG or in-cluster credentials)",
        description="Reconcile RunnerServices against KUBECONFIG or the in-cluster config.",
    )
    run.add_argument(
        "--namespace",
        action="append",
        dest="namespaces",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable; default: all namespaces)",
    )
    run.add_argument(
        "--all-namespaces", action="store_true", help="watch every namespace (the default)"
    )
    run.add_argument(
        "--metrics-address", default="127.0.0.1:8080", help="HOST:PORT serving GET /metrics"
    )
    run.add_argument(
        "--health-address",
        default="127.0.0.1:8081",
        help="HOST:PORT serving GET /healthz and GET /readyz",
    )
    run.add_argument(
        "--leader-elect",
        action="store_true",
        help="reconcile only while holding Lease kuberunner-operator",
    )
    run.add_argument(
        "--lease-namespace",
        default=None,
        metavar="NS",
        help="namespace of the Lease (default: $POD_NAMESPACE, else default)",
    )
    run.add_argument("--log-format", choices=("json", "text"), default="text", help="log format")
    run.set_defaults(func=_run_operator)


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    register_operator(groups)
    register_manifest(groups)


__all__ = ["group_parser", "register"]

"""`kuberunner dev cluster up | down | status | load-image`.

`register_dev` adds the `dev` group; further `dev` commands (e.g. `dev demo`) register
themselves on the subparsers returned by `dev_group`.
"""

from __future__ import annotations

import argparse
import sys
from typing import TypeAlias

from kuberunner.cli import group_parser

# A string: _SubParsersAction is not subscriptable at runtime on Python 3.11.
Groups: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _add_name(parser: argparse.ArgumentParser) -> None:
    from kuberunner_dev.cluster.state import DEFAULT_NAME

    parser.add_argument(
        "--name", default=DEFAULT_NAME, help=f"cluster name (default: {DEFAULT_NAME})"
    )


def _cmd_up(args: argparse.Namespace) -> int:
    from kuberunner_dev.cluster import ClusterError, up

    try:
        info = up(
            args.name,
            args.cpu_nodes,
            args.gpu_nodes,
            args.gpus_per_node,
            real_node=args.real_node,
            node_gpus=args.node_gpus,
        )
    except (ClusterError, ValueError, RuntimeError) as exc:
        print(f"kuberunner dev cluster up: {exc}", file=sys.stderr)
        return 1
    # The path alone on a line, for scripts; then the line to paste into a shell.
    print(info.kubeconfig)
    print(f"export KUBECONFIG={info.kubeconfig}")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    from kuberunner_dev.cluster import ClusterError, down

    try:
        down(args.name)
    except (ClusterError, RuntimeError) as exc:
        print(f"kuberunner dev cluster down: {exc}", file=sys.stderr)
        return 1
    return 0


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def _cmd_status(args: argparse.Namespace) -> int:
    from kuberunner_dev.cluster import ClusterError, status

    try:
        st = status(args.name)
    except ClusterError as exc:
        print(f"kuberunner dev cluster status: {exc}", file=sys.stderr)
        return 1
    if not st.exists:
        print(f"cluster {st.name}: not running (no state in {st.state_dir})")
        return 1
    print(f"cluster {st.name}: {'healthy' if st.healthy else 'UNHEALTHY'} ({st.state_dir})")
    print(f"  cgroup mode: {st.cgroup_mode}")
    for c in st.components:
        if c.healthy:
            word = "healthy"
        elif c.alive:
            word = "unhealthy"
        else:
            word = "crashed"
        print(f"  {c.name:<24} {word:<10} pid {c.pid:<8} rss {_mib(c.rss_bytes):>8}  {c.detail}")
        if not c.healthy:
            print(f"    last lines of {c.log}:")
            for line in c.log_tail.splitlines() or ["(empty)"]:
                print(f"    | {line}")
    print(f"  total rss {_mib(st.rss_bytes)}")
    return 0 if st.healthy else 1


def _cmd_load_image(args: argparse.Namespace) -> int:
    from kuberunner_dev.cluster import ClusterError
    from kuberunner_dev.cluster.images import load_images

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        loaded = load_images(args.images, args.name, progress=say)
    except (ClusterError, RuntimeError) as exc:
        print(f"kuberunner dev cluster load-image: {exc}", file=sys.stderr)
        return 1
    for image in loaded:
        print(image)
    return 0


def dev_group(groups: Groups) -> Groups:
    """Add the `dev` group and return its subparsers."""
    _, dev_cmds = group_parser(groups, "dev", "Development helpers: a local Kubernetes cluster.")
    return dev_cmds


def register_cluster(dev_cmds: Groups) -> None:
    _, cmds = group_parser(
        dev_cmds,
        "cluster",
        "A real local control plane (etcd, kube-apiserver, controller-manager, scheduler) "
        "with one real node (containerd, kubelet, kube-proxy, CoreDNS) and kwok-simulated CPU "
        "and GPU nodes.",
    )
    p_up = cmds.add_parser(
        "up",
        help="start the cluster (or report that it runs); print its kubeconfig path",
        description="Start the cluster and wait until its nodes are Ready. Prints the admin "
        "kubeconfig path on its own line and an `export KUBECONFIG=...` line.",
    )
    _add_name(p_up)
    p_up.add_argument("--cpu-nodes", type=int, default=2, help="CPU nodes (default: 2)")
    p_up.add_argument("--gpu-nodes", type=int, default=2, help="GPU nodes (default: 2)")
    p_up.add_argument(
        "--gpus-per-node", type=int, default=8, help="nvidia.com/gpu per GPU node (default: 8)"
    )
    p_up.add_argument(
        "--no-real-node",
        dest="real_node",
        action="store_false",
        help="kwok nodes only: no kubelet, containerd or bridge on this machine",
    )
    p_up.add_argument(
        "--node-gpus",
        type=int,
        default=4,
        help="nvidia.com/gpu the real node advertises, without a GPU (default: 4)",
    )
    p_up.set_defaults(func=_cmd_up)

    p_down = cmds.add_parser(
        "down", help="stop every component and remove the state", description="Stop the "
        "cluster's processes (SIGTERM, then SIGKILL after a grace period) and remove its state."
    )  # fmt: skip
    _add_name(p_down)
    p_down.set_defaults(func=_cmd_down)

    p_status = cmds.add_parser(
        "status", help="show per-component health", description="Show each component's "
        "process and health endpoint; for a failed component, the tail of its log. Exit 1 "
        "unless all are healthy."
    )  # fmt: skip
    _add_name(p_status)
    p_status.set_defaults(func=_cmd_status)

    p_load = cmds.add_parser(
        "load-image", help="copy images from the project's podman store into the real node",
        description="Save each image from the podman store of hack/build-images.sh and import "
        "it into the real node's containerd (namespace k8s.io), so pods run it with "
        "imagePullPolicy IfNotPresent or Never."
    )  # fmt: skip
    _add_name(p_load)
    p_load.add_argument(
        "images", nargs="+", metavar="IMAGE", help="e.g. localhost/kuberunner-runner:dev"
    )
    p_load.set_defaults(func=_cmd_load_image)


def register_dev(groups: Groups) -> Groups:
    """Register `kuberunner dev ...`; returns the `dev` subparsers for more commands."""
    dev_cmds = dev_group(groups)
    register_cluster(dev_cmds)
    return dev_cmds

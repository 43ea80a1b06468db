"""What the real node leaves on the host besides its network: cgroups, mounts and processes
that containerd started (shims and containers). Found by our own paths, never by name."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from kuberunner_dev.cluster import processes


def _mountinfo() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount, octal escapes (\\040) decoded."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, after = line.split(" - ", 1)
        point = before.split()[4].encode().decode("unicode_escape")
        mounts.append((point, after.split()[0]))
    return mounts


def cgroup_hierarchies() -> list[Path]:
    """Mount points of every cgroup hierarchy (v1 controllers, v1 named, and v2)."""
    return [Path(p) for p, fstype in _mountinfo() if fstype in ("cgroup", "cgroup2")]


def cgroup_mode() -> str:
    """'v2' (unified), 'v1 (hybrid)' (v1 controllers plus a v2 mount) or 'v1'."""
    kinds = {fstype for _, fstype in _mountinfo() if fstype in ("cgroup", "cgroup2")}
    if kinds == {"cgroup2"}:
        return "v2"
    return "v1 (hybrid)" if "cgroup2" in kinds else "v1"


def cgroup_dirs(root: str) -> list[Path]:
    return [h / root.lstrip("/") for h in cgroup_hierarchies()]


def create_cgroup_root(root: str) -> None:
    """The kubelet's cgroupRoot must exist in every hierarchy; a v1 cpuset cgroup needs its
    cpus and mems filled in before anything can join it."""
    for path in cgroup_dirs(root):
        path.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            own = path / name
            if own.exists() and not own.read_text().strip():
                own.write_text((path.parent / name).read_text())


def subdirs_deepest_first(top: Path) -> list[Path]:
    """Every directory below `top` (not `top` itself), deepest first. os.walk skips what
    vanishes while it walks (the kubelet removing a pod's cgroup mid-teardown), where
    Path.rglob raised FileNotFoundError and aborted `down`."""
    found = [Path(d) for d, _, _ in os.walk(top)]
    return sorted((p for p in found if p != top), key=lambda p: -len(p.parts))


def cgroup_pids(root: str) -> set[int]:
    pids: set[int] = set()
    for top in cgroup_dirs(root):
        for directory, _, _ in os.walk(top):
            with contextlib.suppress(OSError, ValueError):
                text = (Path(directory) / "cgroup.procs").read_text()
                pids.update(int(p) for p in text.split())
    return pids


def kill_cgroup(root: str, timeout: float = 10.0) -> None:
    """SIGKILL every process in our pods' cgroups until none is left."""
    deadline = time.monotonic() + timeout
    while pids := cgroup_pids(root):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"pod processes survived SIGKILL: {sorted(pids)}")
        time.sleep(0.1)


def remove_cgroup_root(root: str, timeout: float = 10.0) -> None:
    """rmdir our cgroup trees, deepest first (a cgroup goes once its processes are reaped)."""
    deadline = time.monotonic() + timeout
    for top in cgroup_dirs(root):
        while top.is_dir():
            for path in [*subdirs_deepest_first(top), top]:
                with contextlib.suppress(OSError):
                    path.rmdir()
            if top.is_dir():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cannot remove cgroup {top}")
                time.sleep(0.1)


def mounts_under(*dirs: Path) -> list[Path]:
    """Mount points inside any of `dirs`, deepest first."""
    prefixes = [str(d.resolve()) for d in dirs]
    found = [
        Path(p)
        for p, _ in _mountinfo()
        if any(p == pre or p.startswith(pre + "/") for pre in prefixes)
    ]
    return sorted(set(found), key=lambda p: -len(p.parts))


def unmount_under(*dirs: Path) -> None:
    for _ in range(5):  # stacked mounts come off one layer per pass
        points = mounts_under(*dirs)
        if not points:
            return
        for point in points:
            subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)
    left = mounts_under(*dirs)
    if left:
        raise RuntimeError(f"cannot unmount {left}")


def _processes_whose_argv(matches: Callable[[list[bytes]], bool]) -> list[processes.ProcessRef]:
    refs = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if matches(argv):
            ref = processes.ref_of(int(entry.name))
            if ref is not None:
                refs.append(ref)
    return refs


def processes_with_arg(value: str) -> list[processes.ProcessRef]:
    """Processes whose command line has `value` as one argument (a shim's -address socket)."""
    arg = value.encode()
    return _processes_whose_argv(lambda argv: arg in argv)


def processes_mentioning(fragment: str) -> list[processes.ProcessRef]:
    """Processes with `fragment` inside some argument (`--data-dir=/state/etcd` mentions
    `/state`): those of a cluster whose state dir or /run dir is `fragment`."""
    needle = fragment.encode()
    return _processes_whose_argv(lambda argv: any(needle in arg for arg in argv))


# Paths the kubelet and containerd's CNI library use whatever their configuration says: the
# kubelet links each container's log into /var/log/containers and serves device plugins from
# /var/lib/kubelet/device-plugins; libcni caches results in /var/lib/cni/results.
CONTAINER_LOG_LINKS = Path("/var/log/containers")
DEVICE_PLUGIN_SOCKET = Path("/var/lib/kubelet/device-plugins/kubelet.sock")
CNI_RESULTS = Path("/var/lib/cni/results")
HOST_DIRS = (CONTAINER_LOG_LINKS, Path("/var/lib/kubelet"), Path("/var/lib/cni"))


def save_host_dirs(path: Path) -> None:
    path.write_text(json.dumps([str(d) for d in HOST_DIRS if d.exists()]))


def _remove_empty_tree(top: Path) -> None:
    """rmdir `top` and its empty subdirectories; anything holding a file stays."""
    if not top.is_dir():
        return
    for sub in subdirs_deepest_first(top):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        top.rmdir()


def clean_host_dirs(saved: Path, pod_logs_dir: Path, network: str) -> None:
    """Remove what our kubelet and CNI left in HOST_DIRS, then those of HOST_DIRS that did
    not exist before `up` (per `saved`) if they are empty now."""
    try:
        existed = set(json.loads(saved.read_text()))
    except FileNotFoundError:
        return
    ours = str(pod_logs_dir.resolve()) + "/"
    if CONTAINER_LOG_LINKS.is_dir():
        for link in CONTAINER_LOG_LINKS.iterdir():
            if link.is_symlink() and os.readlink(link).startswith(ours):
                link.unlink(missing_ok=True)
    # One kubelet per machine may serve device plugins; ours is the one that ran until now.
    DEVICE_PLUGIN_SOCKET.unlink(missing_ok=True)
    if CNI_RESULTS.is_dir():
        # <network>-<sandbox id>-<ifname>; containerd's loopback network shares the sandbox id.
        mine = [f for f in CNI_RESULTS.iterdir() if f.name.startswith(f"{network}-")]
        ids = {f.name.removeprefix(f"{network}-").rsplit("-", 1)[0] for f in mine}
        mine += [CNI_RESULTS / f"cni-loopback-{i}-lo" for i in ids]
        for result in mine:
            result.unlink(missing_ok=True)
    for directory in HOST_DIRS:
        if str(directory) not in existed:
            _remove_empty_tree(directory)

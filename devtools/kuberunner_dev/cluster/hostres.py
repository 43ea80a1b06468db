"""What the real node leaves on the host besides its network: cgroups, mounts and processes
that containerd started (shims and containers). Found by our own paths, never by name."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
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


def cgroup_pids(root: str) -> set[int]:
    pids: set[int] = set()
    for top in cgroup_dirs(root):
        for procs in top.rglob("cgroup.procs") if top.is_dir() else ():
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
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
            dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for path in [*dirs, top]:
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


def processes_with_arg(value: str) -> list[processes.ProcessRef]:
    """Processes whose command line has `value` as one argument (a shim's -address socket)."""
    refs = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if value.encode() in argv:
            ref = processes.ref_of(int(entry.name))
            if ref is not None:
                refs.append(ref)
    return refs


# The kubelet always links each container's log here, whatever its podLogsDir.
CONTAINER_LOG_LINKS = Path("/var/log/containers")


def remove_log_links(pod_logs_dir: Path, remove_dir: bool) -> None:
    """Remove the links the kubelet left in /var/log/containers to our pods' logs, and the
    directory itself if the kubelet created it (`remove_dir`) and nothing else is in it."""
    if not CONTAINER_LOG_LINKS.is_dir():
        return
    ours = str(pod_logs_dir.resolve()) + "/"
    for link in CONTAINER_LOG_LINKS.iterdir():
        if link.is_symlink() and os.readlink(link).startswith(ours):
            link.unlink(missing_ok=True)
    if remove_dir:
        with contextlib.suppress(OSError):
            CONTAINER_LOG_LINKS.rmdir()

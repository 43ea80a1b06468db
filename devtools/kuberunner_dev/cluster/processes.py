"""Start, probe and stop the detached component processes of a dev cluster.

A process is identified by its PID *and* its start time (from /proc), so a PID that the kernel
reused for some unrelated process after a crash is never signalled or reported as ours.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Popen objects of processes this interpreter started. Holding them keeps Python from warning
# about still-running children and lets `stop` reap them so they do not linger as zombies.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ProcessRef:
    """A process we started: its PID and start time in clock ticks since boot."""

    pid: int
    start_time: int


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may contain spaces and parentheses; it ends at the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def _start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])


_PR_SET_PDEATHSIG = 1


def _kill_me_with_parent(parent_pid: int) -> Callable[[], None]:
    """A preexec_fn: the kernel SIGKILLs the child when the thread that started it exits."""

    def arm() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return arm


def spawn(
    args: Sequence[str], log_path: Path, cwd: Path | None = None, die_with_parent: bool = False
) -> ProcessRef:
    """Start `args` detached from our session, stdout and stderr appended to `log_path`.

    With `die_with_parent`, the process is killed if this process dies without stopping it
    (for test sessions: a killed pytest must not leave a control plane running)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,  # Ctrl-C in the terminal that ran `up` must not stop it
            close_fds=True,
            preexec_fn=_kill_me_with_parent(os.getpid()) if die_with_parent else None,
        )
    _CHILDREN[proc.pid] = proc
    start = _start_time(proc.pid)
    if start is None:  # exited (and was reaped) before we could look at it
        start = -1
    return ProcessRef(proc.pid, start)


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]


def is_alive(ref: ProcessRef) -> bool:
    """True while the process runs (a zombie counts as dead)."""
    _reap(ref.pid)
    fields = _stat_fields(ref.pid)
    if fields is None or int(fields[19]) != ref.start_time:
        return False
    return fields[0] not in ("Z", "X")


def rss_bytes(ref: ProcessRef) -> int:
    """Resident set size of a live process, 0 if it is gone."""
    if not is_alive(ref):
        return 0
    try:
        for line in Path(f"/proc/{ref.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def _signal(ref: ProcessRef, sig: signal.Signals) -> None:
    if is_alive(ref):
        with contextlib.suppress(ProcessLookupError):
            os.kill(ref.pid, sig)


def stop(refs: Iterable[ProcessRef], grace: float = 10.0) -> None:
    """SIGTERM all, wait up to `grace` seconds, SIGKILL the rest, wait until all are gone."""
    pending = [ref for ref in refs if is_alive(ref)]
    for ref in pending:
        _signal(ref, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pending and time.monotonic() < deadline:
        time.sleep(0.05)
        pending = [ref for ref in pending if is_alive(ref)]
    for ref in pending:
        _signal(ref, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while pending and time.monotonic() < deadline:
        time.sleep(0.05)
        pending = [ref for ref in pending if is_alive(ref)]
    if pending:
        raise RuntimeError(f"processes survived SIGKILL: {[ref.pid for ref in pending]}")


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on 127.0.0.1 that are free right now."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def listening_ports() -> set[int]:
    """TCP ports with a listening socket on this machine (IPv4 and IPv6), read from /proc/net."""
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def log_tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file ('' if it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def ref_of(pid: int) -> ProcessRef | None:
    """A reference to a running process we did not start ourselves (e.g. a containerd shim)."""
    start = _start_time(pid)
    return None if start is None else ProcessRef(pid, start)

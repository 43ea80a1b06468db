"""Bearer tokens for the API client, kept fresh.

Tokens do not live forever: the kubelet rotates a pod's projected ServiceAccount token (hourly
by default, sooner where clusters shorten its life) and revokes it with its pod; cloud
kubeconfigs mint short-lived tokens through `exec` credential plugins. So a token is never read
once and kept:

- `FileToken` (in-cluster, or a kubeconfig `tokenFile`) re-reads the file when its mtime or
  size changes, checked at most once a second;
- `ExecToken` runs the kubeconfig's `exec` plugin (client.authentication.k8s.io/v1 or v1beta1)
  and runs it again shortly before the `expirationTimestamp` it returned;
- every source re-reads or re-runs at once when told that the API server answered 401
  (`invalidate`), as kopf's own login does; the client then retries that request once.

Client certificates are read once (rotating them needs a restart), and plugins that return
certificates instead of a token, and the legacy `auth-provider` section, are refused with a
clear error at start-up.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
# Run the plugin again this long before the token it gave expires.
EXEC_REFRESH_MARGIN = 60.0
EXEC_TIMEOUT = 30.0


class CredentialError(Exception):
    """Credentials could not be obtained; the message says which source and why."""


class TokenSource(Protocol):
    async def token(self) -> str | None: ...

    def invalidate(self) -> None: ...


class StaticToken:
    """A token written inline in the kubeconfig: nothing to refresh."""

    def __init__(self, value: str | None) -> None:
        self.value = value

    async def token(self) -> str | None:
        return self.value

    def invalidate(self) -> None:
        return None


class FileToken:
    def __init__(self, path: Path, check_every: float = 1.0) -> None:
        self.path = path
        self.check_every = check_every
        self._value: str | None = None
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0

    def _read(self) -> None:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp or self._value is None:
                self._value = self.path.read_text().strip()
                self._stamp = stamp
        except OSError as exc:
            if self._value is None:
                raise CredentialError(f"cannot read token file {self.path}: {exc}") from exc
            # Mid-rotation (the kubelet swaps a symlink): keep the last token until it reads.

    async def token(self) -> str | None:
        now = time.monotonic()
        if self._value is None or now - self._checked >= self.check_every:
            self._checked = now
            self._read()
        return self._value

    def invalidate(self) -> None:
        self._checked = 0.0


def _parse_expiry(text: str | None) -> float | None:
    """Seconds from now until an RFC 3339 time (None when there is none)."""
    if not text:
        return None
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (when - datetime.now(UTC)).total_seconds()


class ExecToken:
    """A kubeconfig `exec` credential plugin."""

    def __init__(self, spec: Mapping[str, Any], base: Path) -> None:
        self.api_version = str(spec.get("apiVersion") or "")
        if self.api_version not in EXEC_API_VERSIONS:
            raise CredentialError(
                f"kubeconfig exec plugin: apiVersion {self.api_version!r} is not supported "
                f"(use one of {', '.join(EXEC_API_VERSIONS)})"
            )
        command = str(spec.get("command") or "")
        if not command:
            raise CredentialError("kubeconfig exec plugin: `command` is empty")
        # A relative command with a slash is relative to the kubeconfig's folder, as kubectl's.
        if "/" in command and not os.path.isabs(command):
            command = str(base / command)
        self.argv: Sequence[str] = [command, *(str(a) for a in spec.get("args") or [])]
        self.env = {str(e["name"]): str(e["value"]) for e in spec.get("env") or []}
        self._value: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()

    async def _run(self) -> None:
        info = {"apiVersion": self.api_version, "kind": "ExecCredential"}
        info["spec"] = {"interactive": False}  # type: ignore[assignment]
        env = {**os.environ, **self.env, "KUBERNETES_EXEC_INFO": json.dumps(info)}
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), EXEC_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise CredentialError(f"kubeconfig exec plugin {self.argv[0]}: {exc}") from exc
        if proc.returncode != 0:
            tail = err.decode(errors="replace").strip()[-500:]
            raise CredentialError(
                f"kubeconfig exec plugin {self.argv[0]} exited {proc.returncode}: {tail}"
            )
        try:
            status = json.loads(out)["status"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CredentialError(
                f"kubeconfig exec plugin {self.argv[0]} printed no ExecCredential status: {exc}"
            ) from exc
        token = status.get("token")
        if not token:
            raise CredentialError(
                f"kubeconfig exec plugin {self.argv[0]} returned no token (plugins that "
                "return client certificates are not supported)"
            )
        self._value = str(token)
        remaining = _parse_expiry(status.get("expirationTimestamp"))
        now = time.monotonic()
        self._refresh_at = (
            float("inf") if remaining is None else now + max(remaining - EXEC_REFRESH_MARGIN, 0)
        )

    async def token(self) -> str | None:
        if self._value is None or time.monotonic() >= self._refresh_at:
            async with self._lock:  # one plugin run for all the requests that wait on it
                if self._value is None or time.monotonic() >= self._refresh_at:
                    await self._run()
        return self._value

    def invalidate(self) -> None:
        self._refresh_at = 0.0


def token_source(user: Mapping[str, Any], base: Path) -> TokenSource:
    """The token source a kubeconfig `users[].user` entry describes."""
    if user.get("auth-provider"):
        name = (user["auth-provider"] or {}).get("name", "?")
        raise CredentialError(
            f"kubeconfig auth-provider {name!r} is not supported (it was removed from kubectl "
            "too): use an exec credential plugin, a token, a tokenFile or a client certificate"
        )
    if user.get("exec"):
        return ExecToken(user["exec"], base)
    if user.get("token"):
        return StaticToken(str(user["token"]))
    if user.get("tokenFile"):
        return FileToken((base / str(user["tokenFile"])).expanduser())
    return StaticToken(None)

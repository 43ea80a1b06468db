"""``RemoteRunnerHandle``: a runner's calls sent to a runner server over HTTP (httpx).

``Runner.init_client()`` installs it. The address comes from the ``address`` argument or from
``KUBERUNNER_RUNNER_MAP`` (JSON ``{runner_name: "http://host:port"}``, which the operator
injects into the API server). Connections are pooled HTTP/1.1 keep-alive: a sync ``httpx.Client``
for ``run``; for ``async_run`` on ``http://``, the lean pool of ``handles/http1.py`` (O(1) per
call; httpx's pool costs grow with the calls in flight), and one ``httpx.AsyncClient`` per event
loop for streams, retries and ``https``. Numpy
arrays travel in the binary formats of ``kuberunner.wire`` automatically, and error
answers become the library's exceptions. Unlike BentoML's client, streams check the status and
``is_ready`` never raises (reference section 10, items 13 and 14).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from kuberunner import wire
from kuberunner.envvars import RUNNER_MAP
from kuberunner.exceptions import (
    ConfigError,
    InvalidArgument,
    KuberunnerException,
    NotFound,
    RemoteException,
    RunnerUnreachable,
    ServiceUnavailable,
)
from kuberunner.handles.base import RunnerHandle
from kuberunner.handles.http1 import MAX_AGE_SECONDS, Answer, Http1Pool

if TYPE_CHECKING:
    from kuberunner.runner import Runner, RunnerMethod


def runner_address(name: str, environ: Mapping[str, str] | None = None) -> str:
    """The URL of runner ``name`` from ``KUBERUNNER_RUNNER_MAP``."""
    env = os.environ if environ is None else environ
    text = env.get(RUNNER_MAP)
    if not text:
        raise ConfigError(
            f"no address for runner '{name}': pass address=... to init_client() or set {RUNNER_MAP}"
        )
    try:
        mapping = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{RUNNER_MAP} is not valid JSON: {exc}") from exc
    if not isinstance(mapping, dict) or not isinstance(mapping.get(name), str):
        known = sorted(mapping) if isinstance(mapping, dict) else []
        raise ConfigError(f"{RUNNER_MAP} has no URL for runner '{name}' (it names {known})")
    return str(mapping[name])


# A call that never ran is sent again, so that a rollout or a scale-down loses no call: the
# connection was refused, or closed before any answer (a replica that went away, a keep-alive
# connection it closed), or the replica answered 503 with RETRY_ELSEWHERE (loading or
# draining). Each try opens or picks another connection, which the Service may send to
# another replica. Bounded: a pause before each of these tries, all inside the call's timeout.
RETRY_PAUSES = (0.0, 0.2, 0.5, 1.0)
_NEVER_ANSWERED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)


def _retry_elsewhere(response: httpx.Response) -> bool:
    return response.status_code == 503 and wire.RETRY_ELSEWHERE in response.headers


def _retry_after(response: httpx.Response | None) -> float:
    try:
        return max(1.0, float(response.headers.get("retry-after", 1))) if response else 1.0
    except ValueError:
        return 1.0


class _Tries:
    """The retry budget of one call: how long to pause before the next try, or None."""

    def __init__(self, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.count = 0
        self.last: httpx.Response | Exception | None = None

    def failed(self, last: httpx.Response | Exception) -> float | None:
        self.count += 1
        self.last = last
        if self.count > len(RETRY_PAUSES):
            return None
        pause = RETRY_PAUSES[self.count - 1]
        return None if time.monotonic() + pause >= self.deadline else pause


def _error_message(response: httpx.Response) -> str:
    try:
        payload = json.loads(response.content)
    except ValueError:
        return response.text.strip()
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        return str(payload["error"])
    return response.text.strip()


def error_for(runner: str, response: httpx.Response) -> KuberunnerException:
    """Map a runner server's error answer to the library's exception."""
    message = _error_message(response)
    status = response.status_code
    if status == 400:
        return InvalidArgument(message)
    if status == 404:
        return NotFound(message)
    if status == 503:
        return ServiceUnavailable(message, retry_after=_retry_after(response))
    return RemoteException(f"runner '{runner}' answered {status}: {message}")


class RemoteRunnerHandle(RunnerHandle):
    def __init__(
        self,
        runner: Runner,
        address: str | None = None,
        *,
        timeout: float | None = None,
        max_connections: int = 100,
        max_connection_age: float = MAX_AGE_SECONDS,
    ) -> None:
        super().__init__(runner)
        self.address = (address or runner_address(runner.name)).rstrip("/")
        self.timeout = float(timeout if timeout is not None else runner.config.traffic.timeout)
        # Kept connections are retired at this age so that a Service's replicas added later
        # get their share of the calls (see handles/http1.py).
        self.max_connection_age = max_connection_age
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._sync: httpx.Client | None = None
        self._sync_born = 0.0
        self._sync_lock = threading.Lock()
        self._retired: deque[tuple[float, httpx.Client]] = deque()
        self._ssl: ssl.SSLContext | None = None  # one per handle: making one costs ~20 ms
        self._async: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient] | None = None
        self._max_connections = max_connections
        self._pool: tuple[asyncio.AbstractEventLoop, Http1Pool] | None = None
        self._lean = self.address.startswith("http://")  # https stays on httpx

    def __repr__(self) -> str:
        return f"RemoteRunnerHandle(runner={self.runner.name!r}, address={self.address!r})"

    # --- clients ---------------------------------------------------------------------------

    def _sync_client(self) -> httpx.Client:
        """The sync client, replaced by a new one (new connections) at max_connection_age.

        httpx cannot retire single connections by age, so the whole client is. A retired
        client is closed once any call it carried has run out of time: connecting, sending
        and waiting for the answer each get the whole timeout."""
        now = time.monotonic()
        with self._sync_lock:
            if self._sync is None or now - self._sync_born >= self.max_connection_age:
                if self._sync is not None:
                    self._retired.append((now, self._sync))
                if self._ssl is None:
                    self._ssl = ssl.create_default_context()
                self._sync = httpx.Client(
                    timeout=self.timeout, limits=self._limits, verify=self._ssl
                )
                self._sync_born = now
            while self._retired and now - self._retired[0][0] > 3 * self.timeout:
                self._retired.popleft()[1].close()
            return self._sync

    def _close_sync(self) -> None:
        with self._sync_lock:
            clients = [client for _, client in self._retired]
            if self._sync is not None:
                clients.append(self._sync)
            self._sync = None
            self._retired.clear()
        for client in clients:
            client.close()

    def _async_client(self) -> httpx.AsyncClient:
        # An AsyncClient's pool belongs to the loop that first used it.
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop or self._async[1].is_closed:
            self._async = (loop, httpx.AsyncClient(timeout=self.timeout, limits=self._limits))
        return self._async[1]

    def _lean_pool(self) -> Http1Pool:
        """The lean client's pool for the running loop (see handles/http1.py)."""
        loop = asyncio.get_running_loop()
        if self._pool is None or self._pool[0] is not loop or self._pool[1].closed:
            pool = Http1Pool(self.address, self._max_connections, self.max_connection_age)
            self._pool = (loop, pool)
        return self._pool[1]

    def _path(self, method: RunnerMethod) -> str:
        return "/" if method.name == "__call__" else f"/{method.name}"

    def _url(self, method: RunnerMethod) -> str:
        return self.address + self._path(method)

    def _unreachable(self, exc: Exception) -> RemoteException:
        return RemoteException(
            f"failed to reach runner '{self.runner.name}' at {self.address}: "
            f"{type(exc).__name__}: {exc}"
        )

    def _result(self, response: httpx.Response) -> Any:
        if response.status_code != 200:
            raise error_for(self.runner.name, response)
        return self._decode(response.headers.get("content-type"), response.content)

    def _decode(self, content_type: str | None, body: bytes) -> Any:
        try:
            return wire.decode_result(content_type, body)
        except (wire.WireError, ValueError) as exc:
            raise RemoteException(
                f"runner '{self.runner.name}' sent an undecodable result: {exc}"
            ) from exc

    # --- RunnerHandle ----------------------------------------------------------------------

    async def is_ready(self, timeout: float) -> bool:
        try:
            response = await self._async_client().get(f"{self.address}/readyz", timeout=timeout)
        except Exception:  # refused, reset, DNS, timeout...: not ready, never an error
            return False
        return response.status_code == 200

    def _give_up(self, tries: _Tries) -> KuberunnerException:
        last = tries.last
        if isinstance(last, httpx.Response):
            why = f"every replica tried answered: {_error_message(last)}"
        else:
            why = f"{type(last).__name__}: {last}"
        return RunnerUnreachable(
            f"failed to reach runner '{self.runner.name}' at {self.address} "
            f"({tries.count} tries): {why}",
            retry_after=_retry_after(last if isinstance(last, httpx.Response) else None),
        )

    # A retry goes out on a new connection: the pool may hold more keep-alive connections to
    # the replica that refused the call, and a new one lets the Service pick a live replica.
    def _post(self, tries: _Tries, url: str, body: bytes, content_type: str) -> httpx.Response:
        headers = {"content-type": content_type}
        if not tries.count:
            return self._sync_client().post(url, content=body, headers=headers)
        with httpx.Client(timeout=self.timeout) as fresh:
            return fresh.post(url, content=body, headers=headers)

    async def _apost(
        self, tries: _Tries, method: RunnerMethod, body: bytes, content_type: str
    ) -> httpx.Response | Answer:
        headers = {"content-type": content_type}
        url = self._url(method)
        if not tries.count:
            if self._lean:
                pool = self._lean_pool()
                return await pool.post(self._path(method), body, content_type, self.timeout)
            return await self._async_client().post(url, content=body, headers=headers)
        async with httpx.AsyncClient(timeout=self.timeout) as fresh:
            return await fresh.post(url, content=body, headers=headers)

    def run_method(self, method: RunnerMethod, *args: Any, **kwargs: Any) -> Any:
        content_type, body = wire.encode_call(args, kwargs)
        tries = _Tries(self.timeout)
        while True:
            try:
                response = self._post(tries, self._url(method), body, content_type)
            except _NEVER_ANSWERED as exc:
                pause = tries.failed(exc)
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from exc
            else:
                if not _retry_elsewhere(response):
                    return self._result(response)
                pause = tries.failed(response)
            if pause is None:
                raise self._give_up(tries)
            time.sleep(pause)

    async def async_run_method(self, method: RunnerMethod, *args: Any, **kwargs: Any) -> Any:
        content_type, body = wire.encode_call(args, kwargs)
        tries = _Tries(self.timeout)
        while True:
            try:
                response = await self._apost(tries, method, body, content_type)
            except _NEVER_ANSWERED as exc:
                pause = tries.failed(exc)
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from exc
            else:
                if isinstance(response, Answer):
                    if response.status == 200:
                        return self._decode(response.headers.get("content-type"), response.body)
                    response = response.to_httpx(self._url(method))
                if not _retry_elsewhere(response):
                    return self._result(response)
                pause = tries.failed(response)
            if pause is None:
                raise self._give_up(tries)
            await asyncio.sleep(pause)

    async def async_stream_method(
        self, method: RunnerMethod, *args: Any, **kwargs: Any
    ) -> AsyncIterator[Any]:
        content_type, body = wire.encode_call(args, kwargs)
        client = self._async_client()
        try:
            async with client.stream(
                "POST", self._url(method), content=body, headers={"content-type": content_type}
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise error_for(self.runner.name, response)
                pending = b""
                async for chunk in response.aiter_bytes():
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        yield json.loads(line)
                if pending.strip():
                    raise RemoteException(
                        f"stream from runner '{self.runner.name}' ended inside an item"
                    )
        except httpx.HTTPError as exc:
            raise RemoteException(
                f"stream from runner '{self.runner.name}' broke off: {type(exc).__name__}: {exc}"
            ) from exc

    def _close_pool(self) -> None:
        if self._pool is not None:
            loop, pool = self._pool
            self._pool = None
            if not loop.is_closed():
                pool.close()

    def close(self) -> None:
        self._close_pool()
        self._close_sync()
        if self._async is not None:
            loop, client = self._async
            self._async = None
            if not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(client.aclose())

    async def aclose(self) -> None:
        self._close_pool()
        self._close_sync()
        if self._async is not None:
            _, client = self._async
            self._async = None
            await client.aclose()

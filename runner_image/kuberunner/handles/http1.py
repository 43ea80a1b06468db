"""A lean HTTP/1.1 keep-alive client for the remote handle's ``async_run`` (the API server's hot
path to its runners).

Why not httpx here: httpcore's pool walks every connection for every queued request on every
request start and end (``_assign_requests_to_connections``), so its cost per call grows with the
square of the calls in flight. An API server relaying 128 concurrent requests to one runner
through it made ~116 calls per second (bench/README.md). This pool is a stack of idle
connections: taking and returning one is O(1).

Scope, on purpose small: plain ``http://`` to one origin, a POST with a known-length body, an
answer with a ``Content-Length`` or chunked body, parsed by httptools (uvicorn's parser, which
the server side uses already). Failures are raised as the httpx exceptions the handle already
classifies: ``ConnectError`` (refused), ``RemoteProtocolError`` (closed before an answer),
``ReadTimeout``. Streams, retries on fresh connections, ``https`` and the sync client stay on
httpx.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import cast
from urllib.parse import urlsplit

import httptools
import httpx

# Idle connections older than this are closed rather than reused: the runner server closes
# idle keep-alive connections after 75 s (serving/uvicorn_config.py), and a request written
# into a connection the server is closing would fail.
IDLE_SECONDS = 30.0

# Connections older than this are closed when their answer is in, rather than reused. A
# Service balances connections, not requests: a pool that kept its connections for ever would
# keep sending to the replicas it met first, and a replica added later (a scale-up, a restart)
# would get none of its calls. Retiring connections at this age re-rolls the choice every few
# seconds, for the price of one TCP handshake per connection per period.
MAX_AGE_SECONDS = 10.0


class Answer:
    """Status, headers (lower-case names) and body of one response."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def to_httpx(self, url: str) -> httpx.Response:
        return httpx.Response(
            self.status,
            headers=self.headers,
            content=self.body,
            request=httpx.Request("POST", url),
        )


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.born = time.monotonic()
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._header_name = b""
        self._keep_alive = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"invalid HTTP answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(httpx.RemoteProtocolError("server closed the connection before answering"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name:
            self._header_name = name.lower()
            self._headers[self._header_name.decode("latin-1")] = value.decode("latin-1")
        else:  # a value continued across reads
            key = self._header_name.decode("latin-1")
            self._headers[key] += value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._keep_alive = bool(self._parser.should_keep_alive())
        waiter, self._waiter = self._waiter, None
        answer = Answer(self._parser.get_status_code(), self._headers, b"".join(self._body))
        self._headers, self._body = {}, []
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)
        if not self._keep_alive:
            self.close()

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def send(self, request: bytes) -> asyncio.Future[Answer]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Http1Pool:
    """Keep-alive connections to one ``http://host:port`` origin, for one event loop."""

    def __init__(
        self, address: str, max_connections: int, max_age: float = MAX_AGE_SECONDS
    ) -> None:
        parts = urlsplit(address)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"Http1Pool serves plain http:// addresses, not {address!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.base_path = parts.path.rstrip("/")
        self._host_header = parts.netloc.encode("latin-1")
        self._idle: deque[_Connection] = deque()
        self._slots = asyncio.Semaphore(max_connections)
        self.max_age = max_age
        self.closed = False

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_connection(_Connection, self.host, self.port)
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        return protocol

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()  # the most recently used: least likely to be closed
            fresh = now - connection.born < self.max_age
            if fresh and not connection.closed and now - connection.idle_since < IDLE_SECONDS:
                return connection
            connection.close()
        return None

    async def post(self, path: str, body: bytes, content_type: str, timeout: float) -> Answer:
        """POST ``body`` to ``path``; raises httpx's ConnectError, RemoteProtocolError or
        ReadTimeout."""
        head = b"POST %s HTTP/1.1\r\nhost: %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n" % (
            (self.base_path + path).encode("latin-1"),
            self._host_header,
            content_type.encode("latin-1"),
            len(body),
        )
        async with self._slots:
            connection = self._take_idle() or await self._connect()
            done = False
            try:
                async with asyncio.timeout(timeout):
                    answer = await connection.send(head + body)
                done = True
            except TimeoutError:
                raise httpx.ReadTimeout(f"no answer within {timeout:g} seconds") from None
            finally:
                now = time.monotonic()
                if done and not connection.closed and not self.closed:
                    if now - connection.born < self.max_age:
                        connection.idle_since = now
                        self._idle.append(connection)
                    else:  # old enough: let the next call's connection pick a replica anew
                        connection.close()
                elif not done:  # cancelled or failed mid-request: its state is unknown
                    connection.close()
        return answer

    def close(self) -> None:
        self.closed = True
        while self._idle:
            self._idle.pop().close()

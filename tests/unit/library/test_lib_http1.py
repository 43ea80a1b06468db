"""The lean HTTP/1.1 pool of the remote handle against tiny raw servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from kuberunner.handles.http1 import Http1Pool


async def _serve(handler) -> tuple[asyncio.AbstractServer, str]:  # type: ignore[no-untyped-def]
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


async def test_keep_alive_connections_are_reused_and_bodies_arrive_whole() -> None:
    connections = 0
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                request = await _read_request(reader)
            except asyncio.IncompleteReadError:
                return
            seen.append(request)
            body = request.split(b"\r\n\r\n", 1)[1]
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n")
            writer.write(b"content-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    server, url = await _serve(handler)
    pool = Http1Pool(url, max_connections=4)
    for i in range(3):
        answer = await pool.post("/m", b'{"i": %d}' % i, "application/json", timeout=5)
        assert (answer.status, answer.body) == (200, b'{"i": %d}' % i)
        assert answer.headers["content-type"] == "application/json"
    assert connections == 1
    assert seen[0].startswith(b"POST /m HTTP/1.1\r\n")
    answers = await asyncio.gather(
        *(pool.post("/m", b"x" * 10_000, "text/plain", timeout=5) for _ in range(8))
    )
    assert all(a.body == b"x" * 10_000 for a in answers)
    assert connections <= 4
    pool.close()
    server.close()


async def test_connections_older_than_max_age_are_not_reused() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                await _read_request(reader)
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    server, url = await _serve(handler)
    pool = Http1Pool(url, max_connections=4, max_age=0.3)
    for _ in range(3):
        assert (await pool.post("/", b"", "a/b", timeout=5)).body == b"ok"
    assert connections == 1
    await asyncio.sleep(0.35)  # older than max_age: the next call opens a new connection
    for _ in range(3):
        assert (await pool.post("/", b"", "a/b", timeout=5)).body == b"ok"
    assert connections == 2
    pool.close()
    server.close()


async def test_chunked_answers_and_error_statuses() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(
            b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 2\r\n"
            b"transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        await writer.drain()

    server, url = await _serve(handler)
    pool = Http1Pool(url, max_connections=2)
    answer = await pool.post("/", b"", "application/json", timeout=5)
    assert (answer.status, answer.body, answer.headers["retry-after"]) == (503, b"hello world", "2")
    response = answer.to_httpx(url + "/")
    assert response.status_code == 503
    assert response.text == "hello world"
    pool.close()
    server.close()


async def test_failures_raise_the_httpx_errors_the_handle_retries_on() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(httpx.ConnectError):
        await Http1Pool(f"http://127.0.0.1:{port}", 2).post("/", b"", "a/b", timeout=5)

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.close()

    server, url = await _serve(hang_up)
    with pytest.raises(httpx.RemoteProtocolError):
        await Http1Pool(url, 2).post("/", b"{}", "application/json", timeout=5)
    server.close()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    server, url = await _serve(silent)
    with pytest.raises(httpx.ReadTimeout):
        await Http1Pool(url, 2).post("/", b"{}", "application/json", timeout=0.2)
    server.close()


def test_only_plain_http_addresses() -> None:
    with pytest.raises(ValueError, match="plain http"):
        Http1Pool("https://runner:3000", 1)

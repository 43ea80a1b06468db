"""The ceiling: a bare ASGI app on the runner's own HTTP stack that reads the body and answers.

Same uvicorn configuration as every kuberunner server (``serving.uvicorn_config.lean_config``:
uvloop, httptools, no access log), no work, no batching, no metrics: it answers each request
with the bytes the runner would answer (``--answer CONTENT_TYPE=FILE``, chosen by the request's
Content-Type). ``--processes N`` binds one socket and starts N processes on it, as the runner's
supervisor does for N workers.

Run with the project's interpreter: ``python bench/peers/ceiling.py --port 8000 --answer ...``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from typing import Any

import uvicorn

from kuberunner.serving.asgi import Receive, Scope, Send
from kuberunner.serving.uvicorn_config import lean_config


class CeilingApp:
    def __init__(self, answers: dict[bytes, bytes]) -> None:
        self.answers = answers
        self.default = next(iter(answers.items()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["path"] == "/readyz":
            await _answer(send, b"text/plain", b"ok\n")
            return
        more = True
        while more:  # read the whole body, as a server that uses it must
            message = await receive()
            more = message.get("more_body", False)
        content_type = b""
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value
                break
        answer = self.answers.get(content_type)
        kind, body = (content_type, answer) if answer is not None else self.default
        await _answer(send, kind, body)


async def _answer(send: Send, kind: bytes, body: bytes) -> None:
    headers = [(b"content-type", kind), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--fd", type=int, default=None, help="serve this inherited socket")
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--answer", action="append", default=[], metavar="CONTENT_TYPE=FILE")
    args = p.parse_args()
    answers: dict[bytes, bytes] = {}
    for spec in args.answer:
        kind, path = spec.split("=", 1)
        with open(path, "rb") as f:
            answers[kind.encode()] = f.read()
    if not answers:
        answers[b"application/json"] = b"[]"
    if args.fd is not None:
        config = lean_config(CeilingApp(answers), 5.0)
        uvicorn.Server(config).run(sockets=[socket.socket(fileno=args.fd)])
        return 0
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(2048)
    sock.set_inheritable(True)
    argv: list[Any] = [sys.executable, __file__, "--fd", str(sock.fileno())]
    for spec in args.answer:
        argv += ["--answer", spec]
    children = [subprocess.Popen(argv, pass_fds=[sock.fileno()]) for _ in range(args.processes)]

    def stop(signum: int, frame: object) -> None:
        for child in children:
            child.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    codes = [child.wait() for child in children]
    return max(codes, default=0)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

"""The ASGI app one runner worker serves: method routes, probes and metrics.

The runnable is loaded in the background after the server starts listening, so ``/livez``
answers while a slow model loads and ``/readyz`` says 503 until every worker of the pod has
loaded (see ``state.StateDir``).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kuberunner import wire
from kuberunner.exceptions import KuberunnerException
from kuberunner.handles.caller import INLINE_MAX_SECONDS, Caller
from kuberunner.handles.local import serve_locally
from kuberunner.loader import build_runner
from kuberunner.runner import Runner, RunnerMethod
from kuberunner.server.batching import BatchDispatcher, Overloaded
from kuberunner.server.metrics import RunnerMetrics, render_all
from kuberunner.server.rows import BatchError
from kuberunner.server.state import StateDir
from kuberunner.serving import asgi
from kuberunner.serving.asgi import Receive, Scope, Send
from kuberunner.serving.prometheus import CONTENT_TYPE

log = logging.getLogger(__name__)

_PROBE_OK = b"ok\n"
IN_FLIGHT_PUBLISH_SECONDS = 0.1
_UNKNOWN = "unknown"  # the method label of requests to paths that are no method (bounded)
# Lone batches in a row before the inline fast path is asked for (handles/caller.py): the
# worker has been serving one request at a time.
INLINE_AFTER_LONE_BATCHES = 16


@dataclass(frozen=True)
class WorkerSettings:
    target: str
    name: str
    index: int
    allow_pickle: bool = False
    timeout: float | None = None  # None: the runner's traffic.timeout
    max_body_bytes: int = 64 * 1024 * 1024
    max_concurrency: int | None = None  # None: the runner's traffic.max_concurrency


@dataclass
class _Route:
    method: RunnerMethod
    dispatcher: BatchDispatcher | None


class _HttpError(Exception):
    def __init__(self, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def error_text(exc: BaseException) -> str:
    """``<Type>: <message>``; never a traceback."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _status_of(exc: BaseException) -> int:
    code = getattr(exc, "error_code", None) if isinstance(exc, KuberunnerException) else None
    return int(code) if code is not None and 400 <= int(code) < 600 else 500


class RunnerWorkerApp:
    def __init__(
        self,
        settings: WorkerSettings,
        state: StateDir,
        prometheus_dir: str,
        on_fatal: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.state = state
        self.prometheus_dir = prometheus_dir
        self.on_fatal = on_fatal
        self.routes: dict[str, _Route] = {}
        self.runner: Runner | None = None
        self.caller: Caller | None = None
        self.metrics: RunnerMetrics | None = None
        self.loaded = False
        self.draining = False
        self.timeout = 900.0
        self.max_concurrency: int | None = None
        self._in_flight = 0
        self._published_in_flight = 0
        self._publisher: asyncio.Task[None] | None = None
        self._load_task: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def startup(self) -> None:
        self._load_task = asyncio.get_running_loop().create_task(self._load())

    async def _load(self) -> None:
        started = time.monotonic()
        self.state.mark_loading(self.settings.index)
        try:
            # Importing and instantiating user code may block for minutes: keep the loop free.
            runner, caller = await asyncio.to_thread(self._load_runner)
        except BaseException as exc:
            log.exception("worker %d could not load %s", self.settings.index, self.settings.target)
            self.state.record_load_error(self.settings.index, f"{type(exc).__name__}: {exc}")
            self.on_fatal()
            return
        self._install(runner, caller)
        # Everything loaded so far (modules, the model) lives as long as the process: keep it
        # out of the collector's generations, so full collections stay short under load.
        gc.freeze()
        self._publisher = asyncio.get_running_loop().create_task(self._publish_loop())
        self.state.mark_ready(self.settings.index)
        log.info(
            "worker %d loaded runner %r in %.2fs",
            self.settings.index,
            runner.name,
            time.monotonic() - started,
        )

    def _load_runner(self) -> tuple[Runner, Caller]:
        runner = build_runner(self.settings.target, self.settings.name)
        return runner, serve_locally(runner)

    def _install(self, runner: Runner, caller: Caller) -> None:
        self.runner = runner
        self.caller = caller
        traffic = runner.config.traffic
        self.timeout = float(self.settings.timeout or traffic.timeout)
        self.max_concurrency = self.settings.max_concurrency or traffic.max_concurrency
        max_batch = max((m.max_batch_size for m in runner.runner_methods), default=1)
        self.metrics = RunnerMetrics(runner.name, max_batch)
        for method in runner.runner_methods:
            dispatcher = None
            if method.config.batchable and not method.config.is_stream:
                dispatcher = BatchDispatcher(
                    self._batch_executor(method.name),
                    max_batch_size=method.max_batch_size,
                    max_latency_s=method.max_latency_ms / 1000,
                    batch_dim=method.config.batch_dim,
                    observer=self.metrics.batch_observer(method.name),
                )
            self.routes[_path(method.name)] = _Route(method, dispatcher)
        self.loaded = True

    def _publish_in_flight(self) -> None:
        if self.metrics is not None and self._in_flight != self._published_in_flight:
            self._published_in_flight = self._in_flight
            self.metrics.in_flight.set(self._in_flight)

    async def _publish_loop(self) -> None:
        """Write the in-flight gauge a few times a second instead of twice per request: the
        mmap writes of a multiprocess gauge cost more than the rest of the bookkeeping."""
        while True:
            self._publish_in_flight()
            await asyncio.sleep(IN_FLIGHT_PUBLISH_SECONDS)

    def _batch_executor(self, name: str) -> Callable[[wire.Call], Awaitable[Any]]:
        routes = self.routes

        async def execute(call: wire.Call) -> Any:
            assert self.caller is not None
            dispatcher = routes[_path(name)].dispatcher
            assert dispatcher is not None
            model = dispatcher.model
            # Inline only for a proven-fast batch that holds every request of this worker, after
            # a run of lone requests: requests still in socket buffers are invisible here, and
            # under concurrency blocking the loop would keep them from being read.
            inline = (
                dispatcher.lone_streak >= INLINE_AFTER_LONE_BATCHES
                and model.fitted
                and model.predict(dispatcher.in_flight_rows) <= INLINE_MAX_SECONDS
                and self._in_flight <= dispatcher.in_flight_requests
            )
            return await self.caller.call(name, call.args, call.kwargs, inline=inline)

        return execute

    async def shutdown(self) -> None:
        self.draining = True
        if self._publisher is not None:
            self._publisher.cancel()
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        for route in self.routes.values():
            if route.dispatcher is not None:
                await route.dispatcher.close()
        if self.runner is not None:
            self.runner.destroy()  # closes the local handle's caller

    # --- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await asgi.lifespan(receive, send, self.startup, self.shutdown)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        verb: str = scope["method"]
        route = self.routes.get(path)
        if route is None:
            if path in ("/livez", "/healthz", "/readyz", "/metrics"):
                await self._builtin(path, verb, send)
                return
            if not self.loaded and verb == "POST":
                await asgi.respond_error(
                    send, 503, "runner is still loading", asgi.retry_elsewhere()
                )
                return
            await self._counted(send, 404, f"no route {path}", _UNKNOWN, time.perf_counter())
            return
        name = route.method.name
        started = time.perf_counter()
        if verb != "POST":
            headers = [(b"allow", b"POST")]
            await self._counted(send, 405, f"{path} accepts POST only", name, started, headers)
            return
        if self.draining:
            headers = [(b"connection", b"close"), *asgi.retry_elsewhere()]
            await self._counted(send, 503, "server is shutting down", name, started, headers)
            return
        if self.max_concurrency is not None and self._in_flight >= self.max_concurrency:
            message = f"too many concurrent requests (max_concurrency={self.max_concurrency})"
            await self._counted(send, 503, message, name, started, asgi.retry_after(1))
            return
        metrics = self.metrics
        assert metrics is not None
        self._in_flight += 1
        status = 500
        try:
            status = await self._call(route, scope, receive, send)
        finally:
            self._in_flight -= 1
            metrics.observe_request(name, status, time.perf_counter() - started)

    async def _counted(
        self,
        send: Send,
        status: int,
        message: str,
        method: str,
        started: float,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        await asgi.respond_error(send, status, message, headers)
        if self.metrics is not None:
            self.metrics.observe_request(method, status, time.perf_counter() - started)

    async def _builtin(self, path: str, verb: str, send: Send) -> None:
        if verb not in ("GET", "HEAD"):
            await asgi.respond_error(send, 405, f"{path} accepts GET only", [(b"allow", b"GET")])
        elif path == "/readyz":
            # JSON either way: the operator puts the answer of a pod that is not ready in
            # its status (which workers load, for how long, which failed).
            answer = self.state.readiness()
            if self.draining:
                answer = {**answer, "ready": False, "draining": True}
            text = json.dumps(answer, separators=(",", ":")).encode() + b"\n"
            await asgi.respond(send, 200 if answer["ready"] else 503, text, asgi.JSON_TYPE)
        elif path == "/metrics":
            self._publish_in_flight()
            body = await asyncio.to_thread(render_all, self.prometheus_dir)
            await asgi.respond(send, 200, body, CONTENT_TYPE.encode())
        else:
            await asgi.respond(send, 200, _PROBE_OK)

    async def _call(self, route: _Route, scope: Scope, receive: Receive, send: Send) -> int:
        """Serve one method call; returns the status sent."""
        try:
            body = await asgi.read_body(scope, receive, self.settings.max_body_bytes)
            content_type = asgi.header(scope, b"content-type")
            ctype = content_type.decode("latin-1") if content_type else None
            call = wire.decode_call(ctype, body, allow_pickle=self.settings.allow_pickle)
            pickled = wire.media_type(ctype) == wire.PICKLE
            accept = asgi.header(scope, b"accept")
            json_only = accept is not None and accept.startswith(b"application/json")
            if route.method.config.is_stream:
                return await self._stream(route.method, call, receive, send)
            timer = asyncio.timeout(self.timeout)
            try:
                async with timer:
                    if route.dispatcher is not None:
                        result = await route.dispatcher.submit(call)
                    else:
                        assert self.caller is not None
                        result = await self.caller.call(route.method.name, call.args, call.kwargs)
            except TimeoutError:
                if timer.expired():
                    raise _HttpError(
                        504, f"not able to process the request in {self.timeout:g} seconds"
                    ) from None
                raise
            try:
                kind, payload = wire.encode_result(result, pickled=pickled, json_only=json_only)
            except (TypeError, ValueError) as exc:
                raise _HttpError(500, f"cannot serialise the result: {error_text(exc)}") from exc
            await asgi.respond(send, 200, payload, kind.encode())
            return 200
        except asgi.ClientGone:
            return 499  # the client hung up; nothing to send
        except asgi.BodyTooLarge:
            return await self._fail(
                send, 413, f"body larger than {self.settings.max_body_bytes} bytes"
            )
        except wire.WireError as exc:
            return await self._fail(send, exc.status, exc.message)
        except BatchError as exc:
            return await self._fail(send, 400, error_text(exc))
        except Overloaded as exc:
            return await self._fail(send, 503, str(exc), asgi.retry_after(exc.retry_after))
        except _HttpError as exc:
            return await self._fail(send, exc.status, exc.message, exc.headers)
        except Exception as exc:
            status = _status_of(exc)
            if status >= 500:
                log.exception("%s raised", route.method)
            return await self._fail(send, status, error_text(exc))

    async def _fail(
        self,
        send: Send,
        status: int,
        message: str,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> int:
        await asgi.respond_error(send, status, message, headers)
        return status

    async def _stream(
        self, method: RunnerMethod, call: wire.Call, receive: Receive, send: Send
    ) -> int:
        """Chunked NDJSON, one chunk per item; errors before the first item get a status.

        uvicorn drops writes to a closed connection silently, so a watcher on ``receive``
        notices the client leaving and the generator is stopped instead of running on.
        """
        assert self.caller is not None
        items: AsyncGenerator[Any, None] = self.caller.stream(method.name, call.args, call.kwargs)
        timer = asyncio.timeout(self.timeout)
        try:
            async with timer:
                first = await anext(items)
        except StopAsyncIteration:
            first = _END
        except TimeoutError:
            if timer.expired():
                raise _HttpError(504, f"no stream item within {self.timeout:g} seconds") from None
            raise
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", wire.NDJSON.encode())],
            }
        )
        gone = asyncio.Event()
        watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, gone))
        try:
            item = first
            while item is not _END:
                if gone.is_set():
                    log.info("client left during a %s stream; stopping it", method)
                    await items.aclose()
                    return 499
                await send(
                    {
                        "type": "http.response.body",
                        "body": wire.encode_stream_item(item),
                        "more_body": True,
                    }
                )
                item = await anext(items, _END)
        except Exception:
            # Headers are gone: end without the final chunk so the client sees a broken
            # stream instead of a silently truncated one.
            log.exception("%s failed while streaming", method)
            return 500
        finally:
            watcher.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return 200


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return


_END: Any = object()


def _path(method: str) -> str:
    return "/" if method == "__call__" else f"/{method}"

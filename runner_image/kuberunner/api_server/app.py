"""The API server's ASGI app: a legacy ``Service``'s ``@svc.api`` endpoints plus probes/metrics.

Runners are reached through ``KUBERUNNER_RUNNER_MAP`` (remote handles) or, for
``embedded=True`` runners, in this process (``init_local``). ``/readyz`` is 200 only while
every runner answers ready, so a Service in front of the API server only routes traffic that
can be served.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from kuberunner.config import KuberunnerConfig, load_config
from kuberunner.envvars import RUNNER_MAP
from kuberunner.exceptions import ConfigError, KuberunnerException, ServiceUnavailable
from kuberunner.runner import Runner
from kuberunner.service import InferenceAPI, Service
from kuberunner.serving import asgi
from kuberunner.serving.asgi import Receive, Scope, Send
from kuberunner.serving.prometheus import CONTENT_TYPE, DURATION_BUCKETS

log = logging.getLogger(__name__)

_OK = b"ok\n"


class ApiMetrics:
    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        self.service = service
        self.duration = Histogram(
            "kuberunner_api_server_request_duration_seconds",
            "Time to answer an API request.",
            ["service", "api"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "kuberunner_api_server_requests",
            "API requests answered, by API and HTTP status code.",
            ["service", "api", "code"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "kuberunner_api_server_requests_in_flight",
            "API requests being processed.",
            ["service"],
            registry=self.registry,
        ).labels(service)

    def observe(self, api: str, code: int, seconds: float) -> None:
        self.duration.labels(self.service, api).observe(seconds)
        self.requests.labels(self.service, api, str(code)).inc()


def _error_text(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def connect_runners(service: Service, environ: Mapping[str, str]) -> None:
    """Embedded runners run here; every other runner must be in the runner map."""
    text = environ.get(RUNNER_MAP, "")
    try:
        mapping = json.loads(text) if text else {}
    except ValueError as exc:
        raise ConfigError(f"{RUNNER_MAP} is not valid JSON: {exc}") from exc
    runners = [r for r in service.runners if isinstance(r, Runner)]
    missing = sorted(r.name for r in runners if not r.embedded and r.name not in mapping)
    if missing:
        raise ConfigError(
            f"service '{service.name}' needs runners {missing} in {RUNNER_MAP} "
            f"(it names {sorted(mapping)}); or mark them embedded=True to run them in-process"
        )
    for runner in runners:
        if runner.embedded:
            runner.init_local(quiet=True)
        else:
            runner.init_client(address=mapping[runner.name])


class ApiServerApp:
    def __init__(
        self,
        service: Service,
        *,
        config: KuberunnerConfig | None = None,
        max_body_bytes: int = 64 * 1024 * 1024,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.service = service
        self.config = config or load_config()
        self.timeout = float(self.config.api_server.traffic.timeout)
        self.probe_timeout = float(self.config.api_server.runner_probe.timeout)
        self.max_body_bytes = max_body_bytes
        self.environ = os.environ if environ is None else environ
        self.routes: dict[str, InferenceAPI] = {api.route: api for api in service.apis.values()}
        self.metrics = ApiMetrics(service.name)
        self.started = False
        self.draining = False

    async def startup(self) -> None:
        connect_runners(self.service, self.environ)
        self.started = True

    async def shutdown(self) -> None:
        self.draining = True
        for runner in self.service.runners:
            if isinstance(runner, Runner):
                await runner.adestroy()

    async def runners_ready(self) -> list[str]:
        """Names of the runners that are not ready."""
        runners = [r for r in self.service.runners if isinstance(r, Runner)]
        answers = await asyncio.gather(
            *(r.runner_handle_is_ready(self.probe_timeout) for r in runners)
        )
        return [r.name for r, ok in zip(runners, answers, strict=True) if not ok]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await asgi.lifespan(receive, send, self.startup, self.shutdown)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        verb: str = scope["method"]
        if path in ("/livez", "/healthz", "/readyz", "/metrics"):
            await self._builtin(path, verb, send)
            return
        api = self.routes.get(path)
        if api is None:
            await asgi.respond_error(send, 404, f"no API at {path}")
            return
        if verb != "POST":
            await asgi.respond_error(send, 405, f"{path} accepts POST only", [(b"allow", b"POST")])
            return
        started = time.perf_counter()
        self.metrics.in_flight.inc()
        status = 500
        try:
            status = await self._call(api, scope, receive, send)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.observe(api.name, status, time.perf_counter() - started)

    async def _builtin(self, path: str, verb: str, send: Send) -> None:
        if verb not in ("GET", "HEAD"):
            await asgi.respond_error(send, 405, f"{path} accepts GET only", [(b"allow", b"GET")])
        elif path == "/readyz":
            if self.draining or not self.started:
                await asgi.respond(send, 503, b"not started or shutting down\n")
                return
            not_ready = await self.runners_ready()
            if not_ready:
                await asgi.respond(send, 503, f"runners not ready: {not_ready}\n".encode())
            else:
                await asgi.respond(send, 200, _OK)
        elif path == "/metrics":
            body = generate_latest(self.metrics.registry)
            await asgi.respond(send, 200, body, CONTENT_TYPE.encode())
        else:
            await asgi.respond(send, 200, _OK)

    async def _call(self, api: InferenceAPI, scope: Scope, receive: Receive, send: Send) -> int:
        try:
            body = await asgi.read_body(scope, receive, self.max_body_bytes)
            raw_type = asgi.header(scope, b"content-type")
            content_type = raw_type.decode("latin-1") if raw_type else None
            value = api.input.decode(body, content_type)
            timer = asyncio.timeout(self.timeout)
            try:
                async with timer:
                    result = await api.invoke(value)
            except TimeoutError:
                if timer.expired():
                    message = f"not able to process the request in {self.timeout:g} seconds"
                    await asgi.respond_error(send, 504, message)
                    return 504
                raise
            payload, out_type = api.output.encode(result)
        except asgi.ClientGone:
            return 499
        except asgi.BodyTooLarge:
            await asgi.respond_error(send, 413, f"body larger than {self.max_body_bytes} bytes")
            return 413
        except ServiceUnavailable as exc:  # nothing ran: the client may retry after a while
            log.warning("API %s: %s", api.name, exc)
            await asgi.respond_error(send, 503, _error_text(exc), asgi.retry_after(exc.retry_after))
            return 503
        except KuberunnerException as exc:
            status = int(exc.error_code)
            if status >= 500:
                log.exception("API %s failed", api.name)
            await asgi.respond_error(send, status, _error_text(exc))
            return status
        except Exception as exc:
            log.exception("API %s failed", api.name)
            await asgi.respond_error(send, 500, _error_text(exc))
            return 500
        await asgi.respond(send, 200, payload, out_type.encode())
        return 200

"""Exceptions raised by kuberunner.

Every exception carries `error_code`, the HTTP status a server answers with when the exception
escapes a request handler (the runner server and the API server map it directly).
"""

from __future__ import annotations

from http import HTTPStatus


class KuberunnerException(Exception):
    """Base of all kuberunner errors; unknown subclasses map to 500."""

    error_code: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR


class StateException(KuberunnerException):
    """An object is in the wrong state for the call (e.g. a runner used before `init_local()`)."""

    error_code = HTTPStatus.BAD_REQUEST


class InvalidArgument(KuberunnerException, ValueError):
    """The caller sent arguments the runnable or the endpoint cannot accept."""

    error_code = HTTPStatus.BAD_REQUEST


class NotFound(KuberunnerException):
    """The named runner, method or endpoint does not exist."""

    error_code = HTTPStatus.NOT_FOUND


class ServiceUnavailable(KuberunnerException):
    """The server is overloaded or not ready; retrying later may succeed.

    ``retry_after`` (seconds) is what a server answering with this exception puts in its
    ``Retry-After`` header."""

    error_code = HTTPStatus.SERVICE_UNAVAILABLE

    def __init__(self, message: str = "", retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RemoteException(KuberunnerException):
    """A remote runner failed, or could not be reached."""

    error_code = HTTPStatus.INTERNAL_SERVER_ERROR


class RunnerUnreachable(ServiceUnavailable, RemoteException):
    """No replica of a remote runner took the call (refused, reset, or every one of them
    loading or draining), even after retries. Nothing ran, so it is a 503 to retry later, not
    a 500; it is still a ``RemoteException`` for callers that catch that."""


class ConfigError(KuberunnerException, ValueError):
    """The configuration (file, overrides or arguments) is invalid; the message names the path."""

    error_code = HTTPStatus.INTERNAL_SERVER_ERROR


class ResourceError(ConfigError):
    """A resource request names an unknown resource or holds a malformed quantity."""

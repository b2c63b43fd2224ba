"""Errors raised by the sidecar package, and how each maps to protocol statuses.

    MeshError                              root of everything sidecar raises
    ├── ConfigError (ValueError)           a setting is missing, unknown or wrong (exit 2)
    ├── InvalidInput (ValueError)          the caller's tensors or arguments are unusable
    ├── Unavailable (ConnectionError)      no link to the service could carry the request
    ├── DeadlineExceeded (TimeoutError)    the deadline passed before an answer arrived
    └── RemoteError                        the service answered with an error
        └── HandlerError                   the service's handler raised

Errors from transport are translated at this package's edge by `translate`.
"""

from __future__ import annotations

from typing import Final

import transport
from transport import ErrorCode


class MeshError(Exception):
    """Root of every error the sidecar package raises."""


class ConfigError(MeshError, ValueError):
    """A setting is missing, unknown or has a bad value; the message names it (exit code 2)."""


class InvalidInput(MeshError, ValueError):
    """The caller's tensors or arguments cannot be sent."""


class Unavailable(MeshError, ConnectionError):
    """No link could carry the request (connection refused, lost or closed)."""


class DeadlineExceeded(MeshError, TimeoutError):
    """The request's deadline passed before an answer arrived."""


class RemoteError(MeshError):
    """The service answered with an error: `code`, `message` and the remote exception type."""

    def __init__(self, code: ErrorCode, message: str, remote_type: str | None = None) -> None:
        super().__init__(f"{code.value}: {message}" + (f" ({remote_type})" if remote_type else ""))
        self.code = code
        self.message = message
        self.remote_type = remote_type


class HandlerError(RemoteError):
    """The service's handler raised; `remote_type` names the exception class."""


# One table: wire code -> (HTTP status, gRPC status code name).
STATUS: Final[dict[ErrorCode, tuple[int, str]]] = {
    ErrorCode.INVALID_ARGUMENT: (400, "INVALID_ARGUMENT"),
    ErrorCode.NOT_FOUND: (404, "NOT_FOUND"),
    ErrorCode.DEADLINE_EXCEEDED: (504, "DEADLINE_EXCEEDED"),
    ErrorCode.RESOURCE_EXHAUSTED: (413, "RESOURCE_EXHAUSTED"),
    ErrorCode.UNAVAILABLE: (503, "UNAVAILABLE"),
    ErrorCode.PERMISSION_DENIED: (403, "PERMISSION_DENIED"),
    ErrorCode.CANCELLED: (499, "CANCELLED"),
    ErrorCode.HANDLER_ERROR: (500, "INTERNAL"),
    ErrorCode.PROTOCOL_ERROR: (400, "INVALID_ARGUMENT"),
    ErrorCode.INTERNAL: (500, "INTERNAL"),
}


def translate(exc: transport.TransportError) -> MeshError:
    """The sidecar error that stands for a transport error."""
    if isinstance(exc, transport.RemoteError):
        cls = HandlerError if exc.code == ErrorCode.HANDLER_ERROR else RemoteError
        return cls(exc.code, exc.message, exc.remote_type)
    if isinstance(exc, transport.DeadlineExceeded):
        return DeadlineExceeded(str(exc))
    if isinstance(exc, transport.FrameError):
        return InvalidInput(str(exc))
    if isinstance(exc, transport.Cancelled):
        return RemoteError(ErrorCode.CANCELLED, str(exc))
    return Unavailable(str(exc))

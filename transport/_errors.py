"""Errors raised by the transport package.

    TransportError                         root of everything transport raises
    ├── FrameError (ValueError)            malformed, truncated or inconsistent input
    │   └── LimitExceeded                  well-formed, but over a configured limit
    ├── LinkClosed (ConnectionError)       the link is gone; in-flight requests fail with it
    ├── DeadlineExceeded (TimeoutError)    the request's deadline passed
    ├── Cancelled                          the peer cancelled the request
    └── RemoteError                        the peer answered with an error message

No msgpack, pyarrow or bare OSError escapes a public call: they are translated here.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """What went wrong, as carried in an error message on the wire."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    UNAVAILABLE = "unavailable"
    PERMISSION_DENIED = "permission_denied"
    CANCELLED = "cancelled"
    HANDLER_ERROR = "handler_error"
    PROTOCOL_ERROR = "protocol_error"
    INTERNAL = "internal"


class TransportError(Exception):
    """Root of every error the transport package raises."""


class FrameError(TransportError, ValueError):
    """Input that is malformed, truncated or inconsistent with itself."""


class LimitExceeded(FrameError):
    """Well-formed input over a configured limit (size, count, rank)."""


class LinkClosed(TransportError, ConnectionError):
    """The link closed, or could not be opened; in-flight requests fail with it."""


class DeadlineExceeded(TransportError, TimeoutError):
    """The request's deadline passed before an answer arrived."""


class Cancelled(TransportError):
    """The peer cancelled the request."""


class RemoteError(TransportError):
    """The peer answered with an error: `code`, its `message` and the remote exception type."""

    def __init__(self, code: ErrorCode, message: str, remote_type: str | None = None) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.remote_type = remote_type


def error_code_of(exc: BaseException) -> ErrorCode:
    """The wire code that describes `exc` to a peer."""
    if isinstance(exc, RemoteError):
        return exc.code
    if isinstance(exc, LimitExceeded):
        return ErrorCode.RESOURCE_EXHAUSTED
    if isinstance(exc, FrameError):
        return ErrorCode.INVALID_ARGUMENT
    if isinstance(exc, TimeoutError):
        return ErrorCode.DEADLINE_EXCEEDED
    if isinstance(exc, LinkClosed):
        return ErrorCode.UNAVAILABLE
    return ErrorCode.INTERNAL

"""Errors of the Open Inference Protocol front doors, with the status each protocol expects.

    MeshError                   (sidecar)
    └── OipError                a request the front doors refuse, or a failure to report;
                                `code` is a transport.ErrorCode, turned into an HTTP status
                                and a gRPC code by sidecar's one table (`sidecar.STATUS`)

Where clients match on a message (an unknown model, an unknown region), the wording is
Triton Inference Server's, so that programs written against Triton keep working.
"""

from __future__ import annotations

import transport
from transport import ErrorCode

from .._errors import (
    STATUS,
    DeadlineExceeded,
    InvalidInput,
    MeshError,
    RemoteError,
    Unavailable,
    translate,
)


class OipError(MeshError):
    """A request refused (or failed) with `code` and a message for the caller."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @classmethod
    def invalid(cls, message: str) -> OipError:
        """The caller's request is malformed or inconsistent (HTTP 400)."""
        return cls(ErrorCode.INVALID_ARGUMENT, message)

    @classmethod
    def not_found(cls, message: str) -> OipError:
        """The request names something that does not exist (HTTP 404)."""
        return cls(ErrorCode.NOT_FOUND, message)

    @classmethod
    def internal(cls, message: str) -> OipError:
        """Something failed on our side (HTTP 500)."""
        return cls(ErrorCode.INTERNAL, message)

    @property
    def http_status(self) -> int:
        """The HTTP status this error is answered with."""
        return STATUS[self.code][0]

    @property
    def grpc_code(self) -> str:
        """The name of the gRPC status code this error is answered with."""
        return STATUS[self.code][1]


def unknown_model(model: str) -> OipError:
    """Triton's answer for a model it does not serve (clients match on its start)."""
    return OipError.invalid(f"Request for unknown model: '{model}' is not found")


def oip_error_of(exc: Exception) -> OipError:
    """The OipError that reports `exc` (raised while serving a request) to the caller."""
    if isinstance(exc, OipError):
        return exc
    if isinstance(exc, transport.TransportError):
        exc = translate(exc)
    if isinstance(exc, RemoteError):
        return OipError(exc.code, exc.message)
    if isinstance(exc, InvalidInput):
        return OipError(ErrorCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, DeadlineExceeded):
        return OipError(ErrorCode.DEADLINE_EXCEEDED, str(exc) or "deadline exceeded")
    if isinstance(exc, Unavailable | ConnectionError):
        return OipError(ErrorCode.UNAVAILABLE, str(exc))
    return OipError(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")

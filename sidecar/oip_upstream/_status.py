"""An OIP server's error as a mesh error: its HTTP status or gRPC code, one table each.

The reverse of sidecar's one table (`sidecar.STATUS`, mesh code → status): a status that
table produces maps back to the code it came from, except that a 500 / INTERNAL is read as
the model failing (HANDLER_ERROR), which is what Triton and MLServer mean by it. Statuses
the table never produces are placed by what the servers use them for: MLServer answers a
request that fails validation with 422, a proxy in front of a server answers 502 when the
server is gone, a server over its queue answers 429 (HTTP) or UNAVAILABLE (gRPC), and one
whose endpoint wants a token (PyTriton protects some) answers 401/403 or UNAUTHENTICATED.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import transport
from transport import ErrorCode

HTTP_CODES: Final[Mapping[int, ErrorCode]] = {
    400: ErrorCode.INVALID_ARGUMENT,
    401: ErrorCode.PERMISSION_DENIED,
    403: ErrorCode.PERMISSION_DENIED,
    404: ErrorCode.NOT_FOUND,
    408: ErrorCode.DEADLINE_EXCEEDED,
    413: ErrorCode.RESOURCE_EXHAUSTED,
    422: ErrorCode.INVALID_ARGUMENT,
    429: ErrorCode.UNAVAILABLE,
    499: ErrorCode.CANCELLED,
    500: ErrorCode.HANDLER_ERROR,
    502: ErrorCode.UNAVAILABLE,
    503: ErrorCode.UNAVAILABLE,
    504: ErrorCode.DEADLINE_EXCEEDED,
}

# A server's message goes into a mesh error header, which a peer refuses over
# max_header_size (64 KiB by default); servers in debug mode answer with whole tracebacks.
MAX_MESSAGE: Final = 4096

GRPC_CODES: Final[Mapping[str, ErrorCode]] = {
    "INVALID_ARGUMENT": ErrorCode.INVALID_ARGUMENT,
    "FAILED_PRECONDITION": ErrorCode.INVALID_ARGUMENT,
    "OUT_OF_RANGE": ErrorCode.INVALID_ARGUMENT,
    "NOT_FOUND": ErrorCode.NOT_FOUND,
    "PERMISSION_DENIED": ErrorCode.PERMISSION_DENIED,
    "UNAUTHENTICATED": ErrorCode.PERMISSION_DENIED,
    "DEADLINE_EXCEEDED": ErrorCode.DEADLINE_EXCEEDED,
    "RESOURCE_EXHAUSTED": ErrorCode.RESOURCE_EXHAUSTED,
    "UNAVAILABLE": ErrorCode.UNAVAILABLE,
    "ABORTED": ErrorCode.UNAVAILABLE,
    "CANCELLED": ErrorCode.CANCELLED,
    "INTERNAL": ErrorCode.HANDLER_ERROR,
    "UNKNOWN": ErrorCode.HANDLER_ERROR,
}


def code_of_http(status: int) -> ErrorCode:
    """The mesh code of an HTTP error status (another 4xx: INVALID_ARGUMENT, else INTERNAL)."""
    found = HTTP_CODES.get(status)
    if found is not None:
        return found
    return ErrorCode.INVALID_ARGUMENT if 400 <= status < 500 else ErrorCode.INTERNAL


def code_of_grpc(status: str) -> ErrorCode:
    """The mesh code of a gRPC status code name ("NOT_FOUND" or "StatusCode.NOT_FOUND")."""
    return GRPC_CODES.get(status.removeprefix("StatusCode."), ErrorCode.INTERNAL)


def upstream_error(protocol: str, status: str | None, message: str) -> transport.RemoteError:
    """The mesh error for an OIP server's error answer, carrying the server's own message.

    `status` is what tritonclient reports: "404" (HTTP), "StatusCode.NOT_FOUND" (gRPC), or
    None when the client itself refused the request before sending it (a tensor that JSON
    cannot carry, say): the caller's input, INVALID_ARGUMENT. The remote type names the
    protocol and status ("oip-http 404"), so a reader sees where the error came from. A
    message over MAX_MESSAGE characters is cut, saying so.
    """
    if len(message) > MAX_MESSAGE:
        message = f"{message[:MAX_MESSAGE]}... ({len(message) - MAX_MESSAGE} characters cut)"
    if status is None:
        return transport.RemoteError(ErrorCode.INVALID_ARGUMENT, message, f"{protocol} client")
    code = code_of_http(int(status)) if status.isdigit() else code_of_grpc(status)
    return transport.RemoteError(code, message, f"{protocol} {status.removeprefix('StatusCode.')}")

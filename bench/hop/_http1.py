"""The HTTP load's client core: a request built once, responses parsed from bytes: pure.

Just enough HTTP/1.1 for an echo over a keep-alive connection: a status line, headers,
and a body framed by Content-Length or chunked. The blocking and asyncio loads feed it
the bytes they read. A lean client keeps the client's own cost (one CPU, 16 callers) out
of what is measured: aiohttp's client costs more per request than some of the hops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bench._errors import BenchError

MAX_HEAD: Final = 64 * 1024
_END_OF_HEAD: Final = b"\r\n\r\n"


class HttpProtocolError(BenchError):
    """A response the load cannot read: not HTTP/1.1, no length, or connection close."""


@dataclass(frozen=True, slots=True)
class Response:
    """One response: its status and body."""

    status: int
    body: bytes


def build_request(authority: str, path: str, body: bytes, content_type: str) -> bytes:
    """A keep-alive POST of `body` to `path` on `authority` ("host:port"), as bytes."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


class ResponseParser:
    """Feed bytes as they come; take each complete response out with `next_response`."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        """Add bytes read from the connection."""
        self._buffer += data

    def next_response(self) -> Response | None:
        """The next complete response, or None until more bytes come.

        Raises HttpProtocolError for a response it cannot frame.
        """
        end = self._buffer.find(_END_OF_HEAD)
        if end < 0:
            if len(self._buffer) > MAX_HEAD:
                raise HttpProtocolError(f"response head over {MAX_HEAD} bytes")
            return None
        status, headers = _head(bytes(self._buffer[:end]))
        start = end + len(_END_OF_HEAD)
        if headers.get("connection", "").lower() == "close":
            raise HttpProtocolError(f"the server closes the connection (status {status})")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            framed = _chunked(self._buffer, start)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            framed = None
            if len(self._buffer) >= start + length:
                framed = bytes(self._buffer[start : start + length]), start + length
        else:
            raise HttpProtocolError(f"response without a length (status {status})")
        if framed is None:
            return None
        body, consumed = framed
        del self._buffer[:consumed]
        return Response(status, body)


def _head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
        raise HttpProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(rest[:3]), headers


def _chunked(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """The body of a chunked response starting at `start`, and where it ends; None if cut."""
    body = bytearray()
    at = start
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None
        size = int(bytes(buffer[at:line_end]).split(b";")[0], 16)
        at = line_end + 2
        if size == 0:  # no trailers expected: the empty line ends the body
            if len(buffer) < at + 2:
                return None
            return bytes(body), at + 2
        if len(buffer) < at + size + 2:
            return None
        body += buffer[at : at + size]
        at += size + 2

"""Random HTTP/1.x requests for a listener, and the check of what it answers.

A case is one connection's bytes: a request line (methods, targets under the listener's
paths with hostile suffixes, versions), headers (framing conflicts, bad lengths, hop-by-hop,
oversized, malformed), a body framed right or wrong, sometimes a second pipelined request,
sometimes the whole thing mutated; or noise. Honest requests, which must get a 2xx, are
mixed in. An answer may be any 4xx, a close, or a 5xx the target lists as a routing
answer (a passthrough's 502/503/504); a 500, an unlisted 5xx or a malformed status line is
a finding.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

T = TypeVar("T")

METHODS: Final = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "PROPFIND"]
BAD_METHODS: Final = ["CONNECT", "PRI", "BREW", "get", "G\x00ET", "GET GET", "", "X" * 300]
VERSIONS: Final = ["HTTP/1.1", "HTTP/1.0"]
BAD_VERSIONS: Final = ["HTTP/2.0", "HTTP/0.9", "HTTP/1.", "http/1.1", "HTTP/1.1 x", "", "HTTP/9"]
SUFFIXES: Final = [
    "", "x", "a/b/c", "?q=1", "?a=%zz", "%00", "%2e%2e/%2e%2e/", "../../etc/passwd", "//",
    "a;b=c", "%C3%A9", "?" + "q" * 5000, "x" * 9000, "?a=1&a=2&=&&",
]  # fmt: skip
BAD_SUFFIXES: Final = ["#frag", "\x7f", " ", "\t", "é", "%", "\x00"]
HEADER_LINES: Final = [
    "Content-Length: 5", "Transfer-Encoding: chunked",
    "Transfer-Encoding: gzip, chunked", "Connection: close", "Connection: keep-alive",
    "Connection: upgrade", "Upgrade: websocket", "Upgrade: h2c", "Expect: 100-continue",
    "Expect: nonsense", "Content-Type: application/json", "Content-Type: multipart/form-data",
    "Content-Encoding: gzip", "Content-Encoding: br", "Accept-Encoding: br",
    "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "traceparent: zz",
    "X-Forwarded-For: 1.2.3.4", "Forwarded: for=x", "Cookie: a=b", "Authorization: Bearer x",
    "Proxy-Connection: x", "TE: trailers", "Keep-Alive: timeout=1", "Range: bytes=0-1",
    "Accept: */*", "X-Arrowmesh-Endpoint: e-1", "Via: 1.1 x", "Max-Forwards: 0", "Host: other",
    "Transfer-Encoding: identity", "X-Many: " + ",".join(["v"] * 2000), "X-Utf8: caf\xe9",
]  # fmt: skip
BAD_HEADER_LINES: Final = [
    "Content-Length: -1", "Content-Length: 1, 2", "Content-Length: 0x10", "Host: a\r\nHost: b",
    "Content-Length: 99999999999999999999",
    "Content-Length: 3\r\nContent-Length: 4", "Transfer-Encoding: chunked, chunked",
    "Content-Length: 5\r\nTransfer-Encoding: chunked", "Transfer-Encoding:  chunked",
    "Host:", "Bad Header: x", "NoColon", ": empty-name", " leading-space: x",
    "X-Long: " + "v" * 70000, "X-Nul: a\x00b", "X-Ctl: \x01\x7f", "X-Fold: a\r\n continued",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class HttpCase:
    """One connection's bytes; `honest` requests must get a 2xx."""

    kind: str
    data: bytes
    honest: bool = False


class HttpCases:
    """Requests aimed at `paths` of one listener (`good` the path an honest request uses)."""

    def __init__(
        self, rng: random.Random, paths: Sequence[str], good: str, methods: Sequence[str] = ("GET",)
    ) -> None:
        self.rng = rng
        self.paths = list(paths)
        self.good = good
        self.methods = list(methods)

    def next(self) -> HttpCase:
        roll = self.rng.random()
        if roll < 0.1:
            return self.honest()
        if roll < 0.2:
            return HttpCase("noise", self.rng.randbytes(self.rng.randrange(1, 300)))
        data = self._request()
        if roll < 0.3:
            return HttpCase("mutated", self._mutate(bytearray(data)))
        if roll < 0.45:
            data += self._request()  # pipelined
            return HttpCase("pipelined", data)
        return HttpCase("request", data)

    def honest(self) -> HttpCase:
        method = self.rng.choice(self.methods)
        body = self.rng.randbytes(self.rng.randrange(0, 64)) if method == "POST" else b""
        head = f"{method} {self.good} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        return HttpCase("honest", head.encode() + body, honest=True)

    def _pick(self, good: Sequence[T], bad: Sequence[T], odds: float = 0.1) -> T:
        """Mostly something a parser accepts, so the request reaches the listener's routes."""
        return self.rng.choice(bad if self.rng.random() < odds else good)

    def _request(self) -> bytes:
        rng = self.rng
        target = rng.choice(self.paths) + self._pick(SUFFIXES, BAD_SUFFIXES)
        if rng.random() < 0.05:
            target = rng.choice(["*", "http://fuzz" + target, "", "fuzz:80"])
        line = f"{self._pick(METHODS, BAD_METHODS)} {target} {self._pick(VERSIONS, BAD_VERSIONS)}"
        headers = ["Host: fuzz"] if rng.random() < 0.95 else []
        headers += rng.sample(HEADER_LINES, rng.randrange(0, 4))
        if rng.random() < 0.1:
            headers.append(rng.choice(BAD_HEADER_LINES))
        body = self._body(headers)
        eol = "\r\n" if rng.random() < 0.95 else rng.choice(["\n", "\r", "\r\r\n"])
        return (eol.join([line, *headers]) + eol + eol).encode("utf-8", "surrogateescape") + body

    def _body(self, headers: list[str]) -> bytes:
        rng = self.rng
        framed = [
            h for h in headers if h.lower().startswith(("content-length", "transfer-encoding"))
        ]
        if not framed and rng.random() < 0.5:
            size = rng.randrange(0, 200)
            headers.append(
                f"Content-Length: {size if rng.random() < 0.8 else size + rng.randrange(0, 50)}"
            )
            return rng.randbytes(size)
        if any("chunked" in h for h in framed):
            chunks = [rng.randbytes(rng.randrange(1, 40)) for _ in range(rng.randrange(3))]
            body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
            tails = [b"0\r\n\r\n", b"0;ext=1\r\nX: y\r\n\r\n"]
            tail = self._pick(tails, [b"zz\r\n", b"5\r\nab\r\n", b"", b"0\r\n"], 0.3)
            return body + tail
        lengths = [min(int(m), 300) for h in framed if (m := h.partition(":")[2].strip()).isdigit()]
        if lengths:
            return rng.randbytes(
                lengths[0] if rng.random() < 0.8 else rng.randrange(0, lengths[0] + 1)
            )
        return b"" if rng.random() < 0.9 else rng.randbytes(rng.randrange(1, 20))

    def _mutate(self, data: bytearray) -> bytes:
        rng = self.rng
        for _ in range(rng.randrange(1, 4)):
            at = rng.randrange(len(data)) if data else 0
            op = rng.randrange(4)
            if op == 0 and data:
                data[at] = rng.choice([0, 10, 13, 32, 58, 0xFF, rng.randrange(256)])
            elif op == 1:
                data[at:at] = rng.randbytes(rng.randrange(1, 20))
            elif op == 2:
                del data[at : at + rng.randrange(1, 30)]
            else:
                data = data[:at]
        return bytes(data)


_STATUS: Final = re.compile(rb"HTTP/(\d)\.(\d) (\d{3})[^\r\n]*\r\n")


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """The statuses found in an answer (parsed as far as framing allows), and problems."""

    statuses: tuple[int, ...]
    problems: tuple[str, ...]


def read_http_answer(answer: bytes, allowed_5xx: Mapping[int, bytes | None]) -> HttpAnswer:
    """Check what a listener answered. `allowed_5xx` maps a 5xx status a target may give to a
    fragment its body must hold (None: any body)."""
    statuses: list[int] = []
    problems: list[str] = []
    at = 0
    while at < len(answer):
        match = _STATUS.match(answer, at)
        if match is None:
            if not statuses:
                problems.append(
                    f"answer does not start with a status line: {answer[at : at + 80]!r}"
                )
            break
        status = int(match.group(3))
        statuses.append(status)
        head_end = answer.find(b"\r\n\r\n", match.end() - 2)
        if head_end < 0:
            break
        if 100 <= status < 200:  # an interim answer (100 Continue): the final one follows
            at = head_end + 4
            continue
        head = answer[match.end() : head_end].lower()
        length = re.search(rb"(?:^|\r\n)content-length: *(\d+)", head)
        body_start = head_end + 4
        size = int(length.group(1)) if length else len(answer) - body_start
        if _STATUS.match(answer, body_start):  # the answer to a HEAD: headers only
            size = 0
        body = answer[body_start : body_start + size]
        if status >= 500:
            fragment = allowed_5xx.get(status)
            if status not in allowed_5xx:
                problems.append(f"{status} answer: {answer[at : body_start + 300]!r}")
            elif fragment is not None and body and fragment not in body:  # HEAD: no body
                problems.append(f"{status} without {fragment!r}: {body[:300]!r}")
        if length is None and size:
            break  # chunked or until close: the rest is this response's body
        at = body_start + size
    return HttpAnswer(tuple(statuses), tuple(problems))


def answered(answer: bytes) -> bool:
    """True once `answer` holds one whole final response (by Content-Length or chunks)."""
    at = 0
    while (match := _STATUS.match(answer, at)) is not None:
        head_end = answer.find(b"\r\n\r\n", match.end() - 2)
        if head_end < 0:
            return False
        if 100 <= int(match.group(3)) < 200:
            at = head_end + 4
            continue
        head = answer[match.end() : head_end].lower()
        length = re.search(rb"(?:^|\r\n)content-length: *(\d+)", head)
        if length is not None:
            return len(answer) >= head_end + 4 + int(length.group(1))
        return b"chunked" in head and answer.endswith(b"0\r\n\r\n")
    return False


_NON_UTF8_EXPECT: Final = re.compile(rb"(?im)^expect:[^\r\n]*[\x80-\xff]")


def known_500(data: bytes) -> bool:
    """True for a request whose `Expect` header is not UTF-8: aiohttp's default expect
    handler answers it 500 (the finding pinned by test_daemon_listeners.py)."""
    return _NON_UTF8_EXPECT.search(data) is not None

"""What crosses one HTTP passthrough hop: the target URL and the headers. Pure, no I/O.

The target: the raw (still percent-encoded) path after `{prefix}/{service}` is appended
to the upstream's base path and the raw query kept, so nothing is decoded twice or
normalised on the way.

Hop-by-hop headers (RFC 9110 section 7.6.1) describe one connection, so they stop at the
proxy: `Connection` and every header it names, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`,
`Transfer-Encoding`, `Upgrade`. On the way up `Host` is replaced by the upstream's (the
client library writes it from the URL) and `Expect` is dropped because the listener has
already answered `100-continue`. `Content-Length` crosses in both directions, so a body
keeps its framing when its size is known and goes chunked otherwise.

Trace context (W3C Trace Context, section 3): the upstream hop is a new span of the
caller's trace, or the first span of a new trace when the caller sent no valid
`traceparent`; `tracestate` belongs to the caller's trace and travels only with it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from typing import Final

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ._trace import ensure_traceparent, new_traceparent

ENDPOINT_HEADER: Final = "x-arrowmesh-endpoint"

_HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"}
)
# Replaced or answered by this hop rather than forwarded.
_REQUEST_ONLY: Final = frozenset({"host", "expect", "traceparent", "tracestate", "x-forwarded-for"})
_ZERO_SPAN: Final = "0" * 16

Headers = CIMultiDictProxy[str] | CIMultiDict[str]


def _connection_named(headers: Headers) -> frozenset[str]:
    """Lower-case names listed in `Connection` (all of its lines): hop-by-hop as well."""
    return frozenset(
        token.strip().lower()
        for line in headers.getall("Connection", ())
        for token in line.split(",")
        if token.strip()
    )


def _end_to_end(headers: Headers, also_drop: frozenset[str]) -> CIMultiDict[str]:
    drop = _HOP_BY_HOP | also_drop | _connection_named(headers)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        low = name.lower()
        if low in drop or low.startswith("proxy-"):
            continue
        out.add(name, value)
    return out


def upstream_traceparent(values: Iterable[str]) -> tuple[str, bool]:
    """The `traceparent` for the upstream hop, and whether it continues the caller's trace.

    One valid incoming value keeps its trace id and flags with a new parent span id; none,
    several, or an invalid one (including version `ff` and an all-zero parent id) start a
    new trace.
    """
    given = list(values)
    incoming = given[0] if len(given) == 1 else None
    value = ensure_traceparent(incoming)
    if value != incoming:
        return value, False
    if value.startswith("ff") or value[36:52] == _ZERO_SPAN:
        return new_traceparent(), False
    # A version above 00 is relayed as 00 with the fields 00 defines (section 4.3).
    return f"00-{value[3:35]}-{os.urandom(8).hex()}-{value[53:55]}", True


def upstream_request_headers(
    headers: Headers, *, peer: str | None, scheme: str, host: str | None
) -> CIMultiDict[str]:
    """Headers to send upstream for a request that arrived with `headers`.

    `peer` is the caller's address (appended to `X-Forwarded-For`); `scheme` and `host`
    fill `X-Forwarded-Proto` and `X-Forwarded-Host` unless an earlier hop set them.
    """
    out = _end_to_end(headers, _REQUEST_ONLY)
    chain: list[str] = []
    if "x-forwarded-for" not in _connection_named(headers):
        chain = [v.strip() for v in headers.getall("X-Forwarded-For", ()) if v.strip()]
    if peer:
        chain.append(peer)
    if chain:
        out["X-Forwarded-For"] = ", ".join(chain)
    if "X-Forwarded-Proto" not in out:
        out["X-Forwarded-Proto"] = scheme
    if "X-Forwarded-Host" not in out and host:
        out["X-Forwarded-Host"] = host
    traceparent, continued = upstream_traceparent(headers.getall("traceparent", ()))
    out["traceparent"] = traceparent
    if continued:
        for value in headers.getall("tracestate", ()):
            out.add("tracestate", value)
    return out


def downstream_response_headers(headers: Headers, endpoint_id: str) -> CIMultiDict[str]:
    """Headers to send the caller for an upstream response that arrived with `headers`."""
    out = _end_to_end(headers, frozenset())
    out[ENDPOINT_HEADER] = endpoint_id
    return out


def header_bytes(raw_headers: Iterable[tuple[bytes, bytes]]) -> int:
    """Size of a header block as sent: each line is `name: value` plus CRLF."""
    return sum(len(name) + len(value) + 4 for name, value in raw_headers)


@functools.lru_cache(maxsize=1024)
def check_base_url(base_url: str) -> tuple[str, str, str]:
    """(scheme, raw authority, raw path without trailing '/') of an upstream base URL.

    Raises ValueError unless `base_url` is an absolute http(s) URL without query.
    """
    try:
        url = URL(base_url)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"upstream base_url {base_url!r} is not a URL: {exc}") from exc
    if url.scheme not in ("http", "https") or not url.raw_host:
        raise ValueError(f"upstream base_url {base_url!r} must be an absolute http(s) URL")
    if url.raw_query_string or url.raw_fragment:
        raise ValueError(f"upstream base_url {base_url!r} must have no query or fragment")
    return url.scheme, url.raw_authority, url.raw_path.rstrip("/")


def upstream_url(base_url: str, rel_url: URL, depth: int) -> URL:
    """The upstream URL for a request to `rel_url` under a prefix of `depth` segments."""
    scheme, authority, base_path = check_base_url(base_url)
    parts = rel_url.raw_path.split("/", depth + 2)
    rest = "/" + parts[depth + 2] if len(parts) > depth + 2 else ""
    return URL.build(
        scheme=scheme,
        authority=authority,
        path=(base_path + rest) or "/",
        query_string=rel_url.raw_query_string,
        encoded=True,
    )

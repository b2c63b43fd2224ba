"""Routing and the agent's request wrapper, in front of the endpoint handlers.

Routing copies Go's `ServeMux` as the agent registers its endpoints: exact paths and subtree
prefixes, the longest match wins, a subtree root without its slash is redirected, anything else
is `404 Invalid URL path`. Every routed request then goes through what the agent's `wrap` does:
a bare 500 for a query string Go cannot parse, `OPTIONS` answered with `Allow`, `405` with
`Allow` for other methods (§3.9), errors as plain text. `X-Consul-Default-ACL-Policy` goes on
every answer (§3.5).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from ._acl import request_token
from ._errors import ApiError
from ._gojson import clean, encode
from ._query import Query, parse_query

_TEXT: Final = "text/plain; charset=utf-8"  # what Go's content sniffing gives error bodies


@dataclass(frozen=True, slots=True)
class Call:
    """One routed request: the aiohttp request, its parsed query, the path after the route."""

    request: web.Request
    query: Query
    suffix: str

    @property
    def token(self) -> str:
        return request_token(self.query, self.request.headers)

    def json(self, value: object, headers: dict[str, str] | None = None) -> web.Response:
        body = encode(value, pretty="pretty" in self.query)
        return web.Response(body=body, content_type="application/json", headers=headers)


Handler = Callable[[Call], Awaitable[web.Response]]


@dataclass(frozen=True, slots=True)
class Route:
    pattern: str  # ends with "/" for a subtree
    methods: tuple[str, ...]
    handler: Handler


def text(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """A plain-text answer as the agent writes errors (no trailing newline)."""
    body = clean(message).encode("utf-8")
    response = web.Response(status=status, body=body, headers=headers)
    response.headers["Content-Type"] = _TEXT
    return response


def canonical_header(name: str) -> str:
    """Go's `textproto.CanonicalMIMEHeaderKey`: each dash-separated word capitalized."""
    return "-".join(word[:1].upper() + word[1:].lower() for word in name.split("-"))


def ok() -> web.Response:
    """`200` with an empty body: a write that returned no object."""
    return web.Response(status=200)


class Mux:
    """Dispatches requests to `routes`; `policy` is the ACL default policy to announce."""

    def __init__(self, routes: Iterable[Route], policy: str) -> None:
        self._routes = {route.pattern: route for route in routes}
        self._policy = policy

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """aiohttp's single handler: route, wrap, answer; adds the ACL policy header."""
        response = await self._dispatch(request)
        response.headers["X-Consul-Default-ACL-Policy"] = self._policy
        # Go writes header names canonicalized: X-Consul-Knownleader, not X-Consul-KnownLeader.
        for name, value in [(n, v) for n, v in response.headers.items() if n.startswith("X-")]:
            del response.headers[name]
            response.headers[canonical_header(name)] = value
        return response

    async def _dispatch(self, request: web.Request) -> web.Response:
        path = request.path
        route = self._match(path)
        if route is None:
            return self._unrouted(request)
        try:
            query = parse_query(request.rel_url.raw_query_string)
        except ValueError:
            return web.Response(status=500)  # wrap: "Failed to decode query", no body
        allowed = ",".join(("OPTIONS", *route.methods))
        if request.method == "OPTIONS":
            return web.Response(status=200, headers={"Allow": allowed})
        if request.method not in route.methods:
            return text(405, f"method {request.method} not allowed", {"Allow": allowed})
        call = Call(
            request, query, path[len(route.pattern) :] if route.pattern.endswith("/") else ""
        )
        try:
            return await route.handler(call)
        except ApiError as exc:
            return text(exc.status, exc.message, exc.headers)

    def _match(self, path: str) -> Route | None:
        """ServeMux: an exact pattern, else the longest subtree pattern that prefixes `path`."""
        route = self._routes.get(path)
        if route is not None and not path.endswith("/"):
            return route
        subtrees = [p for p in self._routes if p.endswith("/") and path.startswith(p)]
        return self._routes[max(subtrees, key=len)] if subtrees else None

    def _unrouted(self, request: web.Request) -> web.Response:
        path = request.path
        if path + "/" in self._routes:
            # ServeMux sends a subtree root without its trailing slash to the subtree.
            query = request.rel_url.raw_query_string
            location = path + "/" + (f"?{query}" if query else "")
            return web.Response(status=301, headers={"Location": location})
        if path == "/":
            return text(
                200,
                "Consul Agent: UI disabled. To enable, set ui_config.enabled=true in "
                "the agent configuration and restart.",
            )
        if "/v1/" in path:
            return text(404, "Invalid URL path: not a recognized HTTP API endpoint\n")
        return text(
            404,
            "Invalid URL path: if attempting to use the HTTP API, ensure the path "
            "starts with '/v1/'\n",
        )

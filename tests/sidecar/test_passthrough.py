"""The HTTP passthrough over real sockets: caller -> proxy (-> proxy) -> upstream app.

Every server is a real aiohttp listener on 127.0.0.1 port 0, every caller a real client.
Streaming is shown by ordering, never by timing: an upstream that holds its next chunk
until the caller has seen the previous one, a caller that holds the rest of its body
until the upstream has seen the first half.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from sidecar._errors import DeadlineExceeded, InvalidInput, Unavailable
from sidecar._http_hop import upstream_request_headers, upstream_traceparent, upstream_url
from sidecar._passthrough import (
    PassthroughResult,
    Resolve,
    Upstream,
    listener_options,
    passthrough_routes,
)

WAIT = 20.0  # deadline for any one awaited condition
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Results:
    """on_done's results, with a way to wait for them."""

    def __init__(self) -> None:
        self.items: list[PassthroughResult] = []
        self._changed = asyncio.Event()

    def __call__(self, result: PassthroughResult) -> None:
        self.items.append(result)
        self._changed.set()

    async def wait(self, count: int = 1) -> list[PassthroughResult]:
        async with asyncio.timeout(WAIT):
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.items


def table(upstreams: dict[str, Upstream]) -> Resolve:
    """A resolver over a fixed table; a few names stand for resolver failures."""

    async def resolve(service: str) -> Upstream:
        if service == "invalid":
            raise InvalidInput("service 'invalid' takes no passthrough")
        if service == "late":
            raise DeadlineExceeded("no endpoint of 'late' answered in time")
        if service not in upstreams:
            raise Unavailable(f"no healthy endpoint of {service!r}")
        return upstreams[service]

    return resolve


class Mesh:
    """Servers and clients of one test, all closed at its end."""

    def __init__(self) -> None:
        self.runners: list[web.AppRunner] = []
        self.sessions: list[aiohttp.ClientSession] = []
        self.results = Results()

    def session(self, **kwargs: Any) -> aiohttp.ClientSession:
        session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), **kwargs)
        self.sessions.append(session)
        return session

    async def serve(self, routes: list[web.RouteDef], **options: Any) -> str:
        app = web.Application()
        app.add_routes(routes)
        runner = web.AppRunner(app, access_log=None, **options)
        await runner.setup()
        self.runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def app(self, handler: Handler) -> str:
        """An upstream app answering every method and path with `handler`."""
        return await self.serve(
            [web.route("*", "/{tail:.*}", handler)],
            handler_cancellation=True,
            auto_decompress=False,
        )

    async def proxy(
        self,
        upstreams: dict[str, Upstream],
        *,
        max_header_size: int = 64 * 1024,
        cancel_handlers: bool = True,
        **kwargs: Any,
    ) -> str:
        options: dict[str, Any] = dict(listener_options(max_header_size))
        options["handler_cancellation"] = cancel_handlers
        routes = passthrough_routes(
            table(upstreams),
            self.session(),
            max_header_size=max_header_size,
            on_done=self.results,
            **kwargs,
        )
        return await self.serve(routes, **options)

    async def aclose(self) -> None:
        for session in self.sessions:
            await session.close()
        for runner in reversed(self.runners):
            await runner.cleanup()


@pytest.fixture
async def no_stray_tasks() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    stray = asyncio.all_tasks() - before - {asyncio.current_task()}
    if stray:  # a cancelled task may need its last step; a leaked one never ends
        await asyncio.wait(stray, timeout=5)
    assert not [t for t in stray if not t.done()], f"tasks left running: {stray}"


@pytest.fixture
async def mesh(no_stray_tasks: None) -> AsyncIterator[Mesh]:
    m = Mesh()
    try:
        yield m
    finally:
        await m.aclose()


async def echo(request: web.Request) -> web.Response:
    """What the upstream saw: method, raw target, headers in order, body digest."""
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "target": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_len": len(body),
            "body_sha": hashlib.sha256(body).hexdigest(),
        }
    )


def raw(url: str) -> URL:
    """`url` sent exactly as written (no requoting by the client)."""
    return URL(url, encoded=True)


def headers_named(seen: list[list[str]], name: str) -> list[str]:
    return [v for k, v in seen if k.lower() == name.lower()]


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A port that refuses connections: bound, never listening."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


# -- requests go up unchanged ------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target", "base_path", "expected"),
    [
        (
            "GET",
            "/svc/echo/v2/models?x=1&y=%2F+z&&flag",
            "/app",
            "/app/v2/models?x=1&y=%2F+z&&flag",
        ),
        (
            "GET",
            "/svc/echo/a%2Fb/c%20d/%7Euser/%E2%82%AC;p=1",
            "",
            "/a%2Fb/c%20d/%7Euser/%E2%82%AC;p=1",
        ),
        ("POST", "/svc/echo/infer?q=%3F%26", "/app/", "/app/infer?q=%3F%26"),
        ("PUT", "/svc/echo/dir/", "/app", "/app/dir/"),
        ("DELETE", "/svc/echo//double//", "", "//double//"),
        ("GET", "/svc/echo", "/app", "/app"),
        ("GET", "/svc/echo", "", "/"),
        ("PATCH", "/svc/echo/?only=query", "", "/?only=query"),
        ("GET", "/svc/ech%6F/x", "", "/x"),
    ],
)
async def test_method_raw_path_and_query_reach_the_upstream_unchanged(
    mesh: Mesh, method: str, target: str, base_path: str, expected: str
) -> None:
    app = await mesh.app(echo)
    proxy = await mesh.proxy({"echo": Upstream(app + base_path, "echo-1")})
    body = b"payload" if method in ("POST", "PUT", "PATCH") else None
    async with mesh.session().request(method, raw(proxy + target), data=body) as resp:
        assert resp.status == 200
        assert resp.headers["x-arrowmesh-endpoint"] == "echo-1"
        seen = await resp.json()
    assert seen["method"] == method
    assert seen["target"] == expected
    assert seen["body_len"] == (len(body) if body else 0)
    [result] = await mesh.results.wait()
    assert (result.service, result.endpoint_id, result.method) == ("echo", "echo-1", method)
    assert (result.status, result.error) == (200, "")
    assert result.bytes_in == (len(body) if body else 0)


async def test_headers_cross_without_hop_by_hop_and_gain_forwarded(mesh: Mesh) -> None:
    app = await mesh.app(echo)
    proxy = await mesh.proxy({"echo": Upstream(app, "echo-1")})
    sent = [
        ("X-Custom", "one"),
        ("X-Custom", "two"),
        ("Connection", "keep-alive, X-Drop-Me"),
        ("X-Drop-Me", "secret"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "h2c"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("Authorization", "Bearer token"),
        ("Cookie", "a=1; b=2"),
    ]
    client = mesh.session(skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"))
    async with client.get(proxy + "/svc/echo/h", headers=sent) as resp:
        seen = (await resp.json())["headers"]
    names = {k.lower() for k, _ in seen}
    assert headers_named(seen, "X-Custom") == ["one", "two"]
    assert headers_named(seen, "Authorization") == ["Bearer token"]
    assert headers_named(seen, "Cookie") == ["a=1; b=2"]
    for hop in ("x-drop-me", "keep-alive", "proxy-authorization", "te", "trailer", "upgrade"):
        assert hop not in names
    assert "keep-alive" not in headers_named(seen, "Connection")
    # Nothing invented on the caller's behalf.
    for invented in ("user-agent", "accept", "accept-encoding", "content-type"):
        assert invented not in names
    assert headers_named(seen, "Host") == [URL(app).raw_authority]
    assert headers_named(seen, "X-Forwarded-For") == ["203.0.113.7, 127.0.0.1"]
    assert headers_named(seen, "X-Forwarded-Proto") == ["http"]
    assert headers_named(seen, "X-Forwarded-Host") == [URL(proxy).raw_authority]


async def test_response_headers_cross_without_hop_by_hop(mesh: Mesh) -> None:
    async def answer(request: web.Request) -> web.Response:
        resp = web.Response(status=201, reason="Made It", body=b"done")
        resp.headers.add("Set-Cookie", "a=1")
        resp.headers.add("Set-Cookie", "b=2")
        resp.headers["X-Secret"] = "hop"
        resp.headers["Connection"] = "X-Secret"
        resp.headers["Keep-Alive"] = "timeout=5"
        resp.headers["Proxy-Authenticate"] = "Basic"
        resp.headers["X-Kept"] = "yes"
        return resp

    proxy = await mesh.proxy({"svc": Upstream(await mesh.app(answer), "app-7")})
    async with mesh.session().get(proxy + "/svc/svc/") as resp:
        assert (resp.status, resp.reason) == (201, "Made It")
        assert resp.headers.getall("Set-Cookie") == ["a=1", "b=2"]
        assert resp.headers["X-Kept"] == "yes"
        assert resp.headers["x-arrowmesh-endpoint"] == "app-7"
        assert resp.headers["Content-Length"] == "4"
        for hop in ("X-Secret", "Keep-Alive", "Proxy-Authenticate"):
            assert hop not in resp.headers
        assert await resp.read() == b"done"


async def test_redirects_and_head_pass_as_answered(mesh: Mesh) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        if request.path == "/moved":
            raise web.HTTPFound("/elsewhere")
        return web.Response(body=b"x" * 1234)

    proxy = await mesh.proxy({"app": Upstream(await mesh.app(answer), "a")})
    client = mesh.session()
    async with client.get(proxy + "/svc/app/moved", allow_redirects=False) as resp:
        assert (resp.status, resp.headers["Location"]) == (302, "/elsewhere")
    async with client.head(proxy + "/svc/app/file") as resp:
        assert (resp.status, resp.headers["Content-Length"]) == (200, "1234")
        assert await resp.read() == b""


# -- trace context -----------------------------------------------------------------------

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_PARENT = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"


async def test_valid_traceparent_continues_with_a_new_span(mesh: Mesh) -> None:
    proxy = await mesh.proxy({"echo": Upstream(await mesh.app(echo), "e")})
    sent = {"traceparent": CALLER_PARENT, "tracestate": "vendor=abc,other=1"}
    async with mesh.session().get(proxy + "/svc/echo/", headers=sent) as resp:
        seen = (await resp.json())["headers"]
    [traceparent] = headers_named(seen, "traceparent")
    version, trace, span, flags = traceparent.split("-")
    assert (version, trace, flags) == ("00", CALLER_TRACE, "01")
    assert span not in ("00f067aa0ba902b7", "0" * 16)
    assert headers_named(seen, "tracestate") == ["vendor=abc,other=1"]


@pytest.mark.parametrize(
    "sent",
    [
        {},
        {"traceparent": "not-a-traceparent", "tracestate": "vendor=abc"},
        {"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01", "tracestate": "vendor=abc"},
    ],
    ids=["absent", "garbage", "zero-trace-id"],
)
async def test_missing_or_invalid_traceparent_starts_a_trace(
    mesh: Mesh, sent: dict[str, str]
) -> None:
    proxy = await mesh.proxy({"echo": Upstream(await mesh.app(echo), "e")})
    async with mesh.session().get(proxy + "/svc/echo/", headers=sent) as resp:
        seen = (await resp.json())["headers"]
    [traceparent] = headers_named(seen, "traceparent")
    version, trace, span, flags = traceparent.split("-")
    assert version == "00" and len(trace) == 32 and len(span) == 16 and len(flags) == 2
    assert trace != "0" * 32
    assert headers_named(seen, "tracestate") == []  # it described the discarded trace


def test_traceparent_rules_of_the_w3c_spec() -> None:
    child, kept = upstream_traceparent([CALLER_PARENT])
    assert kept and child.startswith(f"00-{CALLER_TRACE}-") and child.endswith("-01")
    for bad in (
        [f"ff-{CALLER_TRACE}-00f067aa0ba902b7-01"],  # version ff is invalid
        [f"00-{CALLER_TRACE}-{'0' * 16}-01"],  # so is an all-zero parent id
        [CALLER_PARENT.upper()],  # hex must be lower case
        [CALLER_PARENT, CALLER_PARENT],  # two headers: ambiguous
    ):
        fresh, kept = upstream_traceparent(bad)
        assert not kept and CALLER_TRACE not in fresh, bad
    # A future version is relayed as version 00.
    relayed, kept = upstream_traceparent([f"01-{CALLER_TRACE}-00f067aa0ba902b7-00"])
    assert kept and relayed.startswith(f"00-{CALLER_TRACE}-") and relayed.endswith("-00")


def test_forwarded_headers_extend_an_existing_chain() -> None:
    from multidict import CIMultiDict

    incoming = CIMultiDict(
        [
            ("X-Forwarded-For", "198.51.100.1"),
            ("X-Forwarded-For", "10.0.0.2"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "public.example"),
            ("Host", "sidecar:7701"),
        ]
    )
    out = upstream_request_headers(incoming, peer="10.0.0.3", scheme="http", host="sidecar:7701")
    assert out.getall("X-Forwarded-For") == ["198.51.100.1, 10.0.0.2, 10.0.0.3"]
    assert out.getall("X-Forwarded-Proto") == ["https"]
    assert out.getall("X-Forwarded-Host") == ["public.example"]
    assert "Host" not in out


def test_upstream_url_appends_the_raw_rest_of_the_path() -> None:
    base = "http://10.99.0.5:7700/svc/embedder"
    assert str(upstream_url(base, raw("/svc/x/a%2Fb?q=%20"), 1)) == base + "/a%2Fb?q=%20"
    assert str(upstream_url(base, raw("/svc/x"), 1)) == base
    assert str(upstream_url(base + "/", raw("/svc/x/"), 1)) == base + "/"
    assert str(upstream_url("http://[::1]:80", raw("/p/q/x/y"), 2)) == "http://[::1]/y"
    assert str(upstream_url("http://h:1", raw("/x"), 0)) == "http://h:1/"


@pytest.mark.parametrize("base_url", ["10.0.0.1:80", "ftp://h/x", "http://h/x?q=1", "http:///x"])
def test_upstream_rejects_a_base_url_it_cannot_extend(base_url: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        Upstream(base_url, "e")


async def test_routes_refuse_a_session_that_keeps_cookies() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ValueError, match="DummyCookieJar"):
            passthrough_routes(table({}), session)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        with pytest.raises(ValueError, match="prefix"):
            passthrough_routes(table({}), session, prefix="svc/")


# -- bodies stream -----------------------------------------------------------------------

BIG = 64 * 1024 * 1024
PIECE = 1024 * 1024


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
async def test_64_mib_request_body_streams_through_in_pieces(mesh: Mesh, framing: str) -> None:
    half_arrived = asyncio.Event()

    async def sink(request: web.Request) -> web.Response:
        digest, received = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            received += len(chunk)
            if received >= BIG // 2:
                half_arrived.set()
        te = request.headers.get("Transfer-Encoding", "")
        body = {"received": received, "sha": digest.hexdigest(), "te": te}
        return web.json_response(body)

    sent = hashlib.sha256()

    async def produce() -> AsyncIterator[bytes]:
        for i in range(BIG // PIECE):
            if i == BIG // PIECE // 2:
                # The rest waits until the upstream holds the first half: a proxy that
                # buffered the body whole would never get there.
                async with asyncio.timeout(WAIT):
                    await half_arrived.wait()
            piece = i.to_bytes(4, "big") * (PIECE // 4)
            sent.update(piece)
            yield piece

    proxy = await mesh.proxy({"sink": Upstream(await mesh.app(sink), "s")})
    headers = {"Content-Length": str(BIG)} if framing == "content-length" else {}
    async with mesh.session().post(proxy + "/svc/sink/", data=produce(), headers=headers) as r:
        seen = await r.json()
    assert seen["received"] == BIG
    assert seen["sha"] == sent.hexdigest()
    assert seen["te"] == ("chunked" if framing == "chunked" else "")
    [result] = await mesh.results.wait()
    assert (result.bytes_in, result.status, result.error) == (BIG, 200, "")


async def test_sse_events_reach_the_caller_one_at_a_time(mesh: Mesh) -> None:
    count = 5
    seen_by_caller = [asyncio.Event() for _ in range(count)]

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(count):
            await resp.write(f"id: {i}\ndata: token {i}\n\n".encode())
            # The next event waits for the caller to have this one.
            async with asyncio.timeout(WAIT):
                await seen_by_caller[i].wait()
        await resp.write_eof()
        return resp

    proxy = await mesh.proxy({"llm": Upstream(await mesh.app(events), "llm-1")})
    async with mesh.session().get(proxy + "/svc/llm/v1/stream") as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"
        assert resp.headers["Transfer-Encoding"] == "chunked"
        for i in range(count):
            event = await resp.content.readuntil(b"\n\n")
            assert event == f"id: {i}\ndata: token {i}\n\n".encode()
            seen_by_caller[i].set()
        assert await resp.read() == b""
    [result] = await mesh.results.wait()
    assert result.bytes_out == sum(len(f"id: {i}\ndata: token {i}\n\n") for i in range(count))


async def test_content_length_is_kept_and_chunked_stays_chunked(mesh: Mesh) -> None:
    pieces = [bytes([i]) * (1000 + 7919 * i) for i in range(8)]

    async def answer(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        if request.path == "/sized":
            resp.content_length = sum(map(len, pieces))
        await resp.prepare(request)
        for piece in pieces:
            await resp.write(piece)
        await resp.write_eof()
        return resp

    proxy = await mesh.proxy({"app": Upstream(await mesh.app(answer), "a")})
    client = mesh.session()
    async with client.get(proxy + "/svc/app/sized") as resp:
        assert resp.headers["Content-Length"] == str(sum(map(len, pieces)))
        assert "Transfer-Encoding" not in resp.headers
        assert await resp.read() == b"".join(pieces)
    async with client.get(proxy + "/svc/app/chunked") as resp:
        assert resp.headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in resp.headers
        assert await resp.read() == b"".join(pieces)


async def test_gzip_bodies_pass_byte_identical_both_ways(mesh: Mesh) -> None:
    request_body = gzip.compress(b'{"prompt": "hello"}' * 1000)
    response_body = gzip.compress(b"token " * 5000)

    async def answer(request: web.Request) -> web.Response:
        got = await request.read()
        assert request.headers["Content-Encoding"] == "gzip"
        assert got == request_body
        return web.Response(body=response_body, headers={"Content-Encoding": "gzip"})

    proxy = await mesh.proxy({"app": Upstream(await mesh.app(answer), "a")})
    client = mesh.session(auto_decompress=False)
    headers = {"Content-Encoding": "gzip", "Accept-Encoding": "gzip"}
    async with client.post(proxy + "/svc/app/", data=request_body, headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Encoding"] == "gzip"
        assert resp.headers["Content-Length"] == str(len(response_body))
        assert await resp.read() == response_body


async def test_two_chained_proxies_relay_like_two_sidecars(mesh: Mesh) -> None:
    gate = asyncio.Event()

    async def app_handler(request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b"data: first\n\n")
            async with asyncio.timeout(WAIT):
                await gate.wait()
            await resp.write(b"data: second\n\n")
            await resp.write_eof()
            return resp
        return await echo(request)

    app = await mesh.app(app_handler)
    receiving = await mesh.proxy({"embedder": Upstream(app + "/", "app-1")})
    sending = await mesh.proxy({"embedder": Upstream(receiving + "/svc/embedder", "sidecar-b")})
    client = mesh.session()
    target = "/svc/embedder/v1/emb%2Fed/?input=a%20b"
    headers = {"traceparent": CALLER_PARENT}
    async with client.post(raw(sending + target), data=b"x" * 100_000, headers=headers) as r:
        assert r.headers["x-arrowmesh-endpoint"] == "sidecar-b"
        seen = await r.json()
    assert seen["target"] == "/v1/emb%2Fed/?input=a%20b"
    assert seen["body_len"] == 100_000
    assert headers_named(seen["headers"], "X-Forwarded-For") == ["127.0.0.1, 127.0.0.1"]
    assert headers_named(seen["headers"], "X-Forwarded-Host") == [URL(sending).raw_authority]
    [traceparent] = headers_named(seen["headers"], "traceparent")
    assert traceparent.split("-")[1] == CALLER_TRACE
    assert traceparent != CALLER_PARENT

    async with client.get(sending + "/svc/embedder/stream") as resp:
        assert await resp.content.readuntil(b"\n\n") == b"data: first\n\n"
        gate.set()
        assert await resp.read() == b"data: second\n\n"
    results = await mesh.results.wait(4)
    assert sorted(r.endpoint_id for r in results) == ["app-1", "app-1", "sidecar-b", "sidecar-b"]
    assert all(r.error == "" for r in results)


# -- a caller that goes away -------------------------------------------------------------


@pytest.mark.parametrize("cancel_handlers", [True, False], ids=["cancelling", "polling"])
@pytest.mark.parametrize("phase", ["before-headers", "mid-body"])
async def test_caller_leaving_cancels_the_upstream(
    mesh: Mesh, phase: str, cancel_handlers: bool
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        try:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            if phase == "mid-body":
                await resp.prepare(request)
                await resp.write(b"data: one\n\n")
            started.set()
            await asyncio.Event().wait()  # until the proxy lets go of the request
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return resp

    app = await mesh.app(stall)
    proxy = await mesh.proxy({"slow": Upstream(app, "s")}, cancel_handlers=cancel_handlers)
    client = mesh.session()
    if phase == "mid-body":
        async with client.get(proxy + "/svc/slow/") as resp:
            assert await resp.content.readuntil(b"\n\n") == b"data: one\n\n"
            resp.close()  # drops the connection
    else:
        request = asyncio.create_task(client.get(proxy + "/svc/slow/"))
        async with asyncio.timeout(WAIT):
            await started.wait()
        request.cancel()
        await asyncio.wait([request])
        assert request.cancelled()
    async with asyncio.timeout(WAIT):
        await cancelled.wait()
    [result] = await mesh.results.wait()
    assert result.error == "downstream_disconnected"
    assert result.status == (200 if phase == "mid-body" else 499)


async def test_caller_leaving_mid_upload_cancels_the_upstream(mesh: Mesh) -> None:
    got_some, ended = asyncio.Event(), asyncio.Event()

    async def slurp(request: web.Request) -> web.Response:
        try:
            async for _ in request.content.iter_any():
                got_some.set()
        except (asyncio.CancelledError, aiohttp.ClientError, ConnectionError):
            ended.set()
            raise
        return web.Response()

    proxy = URL(await mesh.proxy({"up": Upstream(await mesh.app(slurp), "u")}))
    _, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(b"POST /svc/up/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
    writer.write(b"b" * 1000)
    async with asyncio.timeout(WAIT):
        await got_some.wait()
    writer.close()
    await writer.wait_closed()
    async with asyncio.timeout(WAIT):
        await ended.wait()
    [result] = await mesh.results.wait()
    assert (result.status, result.error, result.bytes_in) == (499, "downstream_disconnected", 1000)


# -- failures ----------------------------------------------------------------------------


async def error_of(resp: aiohttp.ClientResponse) -> dict[str, str]:
    assert resp.content_type == "application/json"
    body: dict[str, str] = json.loads(await resp.read())
    assert set(body) == {"error", "service", "endpoint"}
    return body


async def test_refused_connection_is_502(mesh: Mesh) -> None:
    with refused_port() as port:
        proxy = await mesh.proxy({"gone": Upstream(f"http://127.0.0.1:{port}", "g-1")})
        async with mesh.session().get(proxy + "/svc/gone/x") as resp:
            assert resp.status == 502
            assert resp.headers["x-arrowmesh-endpoint"] == "g-1"
            body = await error_of(resp)
    assert (body["service"], body["endpoint"]) == ("gone", "g-1")
    assert f"127.0.0.1:{port}" in body["error"]
    [result] = await mesh.results.wait()
    assert (result.status, result.error) == (502, "connect_failed")


async def test_connect_timeout_is_504(mesh: Mesh) -> None:
    # A listener whose accept queue is full: the kernel drops further SYNs, so a
    # connection attempt hangs until the proxy's connect_timeout.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    try:
        _, filler = await asyncio.open_connection("127.0.0.1", port)
        try:
            proxy = await mesh.proxy(
                {"stuck": Upstream(f"http://127.0.0.1:{port}", "st")}, connect_timeout=0.3
            )
            async with mesh.session().get(proxy + "/svc/stuck/") as resp:
                assert resp.status == 504
                body = await error_of(resp)
            assert "connect_timeout=0.3" in body["error"]
        finally:
            filler.close()
            await filler.wait_closed()
    finally:
        listener.close()
    [result] = await mesh.results.wait()
    assert (result.status, result.error) == (504, "connect_timeout")


@pytest.mark.parametrize(
    ("service", "status", "error"),
    [("nobody", 503, "unavailable"), ("invalid", 400, "bad_request"), ("late", 504, "deadline")],
)
async def test_resolver_errors_map_to_statuses(
    mesh: Mesh, service: str, status: int, error: str
) -> None:
    proxy = await mesh.proxy({})
    async with mesh.session().get(f"{proxy}/svc/{service}/x") as resp:
        assert resp.status == status
        body = await error_of(resp)
        assert ("Retry-After" in resp.headers) == (status == 503)
    assert body["service"] == service and body["endpoint"] == "" and service in body["error"]
    [result] = await mesh.results.wait()
    assert (result.status, result.error, result.endpoint_id) == (status, error, "")


@pytest.mark.parametrize("name", ["-dash", ".dot", "a" * 64, "a%2Fb", "sp%20ace", "caf%C3%A9"])
async def test_invalid_service_names_are_400(mesh: Mesh, name: str) -> None:
    proxy = await mesh.proxy({})
    async with mesh.session().get(raw(f"{proxy}/svc/{name}/x")) as resp:
        assert resp.status == 400
        body = await error_of(resp)
    assert "1-63 characters" in body["error"]


async def test_oversized_headers_are_431(mesh: Mesh) -> None:
    proxy = await mesh.proxy({"echo": Upstream(await mesh.app(echo), "e")}, max_header_size=16384)
    client = mesh.session()
    many = [(f"X-Big-{i}", "v" * 5000) for i in range(4)]
    async with client.get(proxy + "/svc/echo/", headers=many) as resp:
        assert resp.status == 431
        body = await error_of(resp)
    assert "max_header_size=16384" in body["error"]
    # One line over the whole budget is refused by aiohttp's parser, naming the limit.
    async with client.get(proxy + "/svc/echo/", headers={"X-Huge": "v" * 20000}) as resp:
        assert resp.status == 400
        assert "16384" in await resp.text()
    # Just under the budget passes.
    fits = [(f"X-Big-{i}", "v" * 5000) for i in range(3)]
    async with client.get(proxy + "/svc/echo/", headers=fits) as resp:
        assert resp.status == 200


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
async def test_upstream_dying_mid_body_breaks_the_callers_response(
    mesh: Mesh, framing: str
) -> None:
    async def dying(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        if framing == "content-length":
            resp.content_length = 100_000
        await resp.prepare(request)
        await resp.write(b"partial")
        assert request.transport is not None
        request.transport.close()  # gone without finishing the body
        return resp

    proxy = await mesh.proxy({"dying": Upstream(await mesh.app(dying), "d")})
    async with mesh.session().get(proxy + "/svc/dying/") as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    [result] = await mesh.results.wait()
    assert (result.status, result.error) == (200, "upstream_aborted")


async def test_http10_caller_gets_a_reset_when_the_upstream_dies_mid_body(mesh: Mesh) -> None:
    async def dying(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"partial")
        assert request.transport is not None
        request.transport.close()
        return resp

    proxy = URL(await mesh.proxy({"dying": Upstream(await mesh.app(dying), "d")}))
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    try:
        # HTTP/1.0 has no chunking: the body ends where the connection ends, so only a
        # reset (not a FIN) tells this caller the body is incomplete.
        writer.write(b"GET /svc/dying/ HTTP/1.0\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            async with asyncio.timeout(WAIT):
                await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    [result] = await mesh.results.wait()
    assert (result.status, result.error) == (200, "upstream_aborted")


async def test_expect_100_continue_is_answered_here_and_not_forwarded(mesh: Mesh) -> None:
    proxy = await mesh.proxy({"echo": Upstream(await mesh.app(echo), "e")})
    async with mesh.session().post(proxy + "/svc/echo/", data=b"z" * 5000, expect100=True) as r:
        seen = await r.json()
    assert seen["body_len"] == 5000
    assert headers_named(seen["headers"], "Expect") == []


async def test_on_done_reports_one_result_per_request(mesh: Mesh) -> None:
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"r" * 2000)

    proxy = await mesh.proxy({"app": Upstream(await mesh.app(answer), "app-3")})
    async with mesh.session().put(proxy + "/svc/app/k", data=b"q" * 1000) as resp:
        assert await resp.read() == b"r" * 2000
    [result] = await mesh.results.wait()
    assert result.service == "app" and result.endpoint_id == "app-3" and result.method == "PUT"
    assert (result.status, result.bytes_in, result.bytes_out, result.error) == (200, 1000, 2000, "")
    assert 0 < result.seconds < WAIT

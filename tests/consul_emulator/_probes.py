"""The checks the agent runs itself: HTTP, TCP and gRPC (consul-api.md §2.1).

Verdicts and output texts follow `agent/checks`: HTTP 2xx is passing, 429 warning, anything
else critical, with `HTTP GET <url>: 200 OK Output: <body tail>`; TCP passes when a connection
opens; gRPC asks the standard health service. A probe returns `(status, output)` and never
raises for a failed target. gRPC over TLS verifies the server (no skip-verify here).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Final

import aiohttp

from ._definition import CheckType
from ._duration import SECOND

DEFAULT_TIMEOUT: Final = 10.0  # seconds, the agent's default for HTTP, TCP and gRPC checks
USER_AGENT: Final = "Consul Health Check"


def timeout_of(spec: CheckType) -> float:
    return spec.timeout / SECOND if spec.timeout > 0 else DEFAULT_TIMEOUT


async def probe(
    spec: CheckType, session: aiohttp.ClientSession, output_max: int
) -> tuple[str, str]:
    """Run the check once: `(status, output)`."""
    if spec.kind == "http":
        return await probe_http(spec, session, output_max)
    if spec.kind == "tcp":
        return await probe_tcp(spec.tcp, timeout_of(spec))
    return await probe_grpc(spec, timeout_of(spec))


async def probe_http(
    spec: CheckType, session: aiohttp.ClientSession, output_max: int
) -> tuple[str, str]:
    method = spec.method or "GET"
    headers = [(name, value) for name, values in spec.header for value in values]
    names = {name.lower() for name, _ in headers}
    if "user-agent" not in names:
        headers.append(("User-Agent", USER_AGENT))
    if "accept" not in names:
        headers.append(("Accept", "text/plain, text/*, */*"))
    try:
        async with asyncio.timeout(timeout_of(spec)):
            async with session.request(
                method,
                spec.http,
                headers=headers,
                data=spec.body.encode() if spec.body else None,
                allow_redirects=not spec.disable_redirects,
                ssl=not spec.tls_skip_verify,
                server_hostname=spec.tls_server_name or None,
            ) as response:
                body = await response.read()
    except TimeoutError:
        reason = "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        return "critical", _url_error(method, spec.http, reason)
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return "critical", _url_error(method, spec.http, _describe(exc))
    # The agent keeps the last bytes of the body (a circular buffer of OutputMaxSize).
    tail = body[-output_max:].decode("utf-8", errors="replace")
    status_line = f"{response.status} {response.reason or ''}".rstrip()
    output = f"HTTP {method} {spec.http}: {status_line} Output: {tail}"
    if 200 <= response.status <= 299:
        return "passing", output
    return ("warning" if response.status == 429 else "critical"), output


def _url_error(method: str, url: str, reason: str) -> str:
    """Go's `url.Error` text: `Get "http://…": <reason>`."""
    return f'{method[:1]}{method[1:].lower()} "{url}": {reason}'


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"dial tcp {exc.host}:{exc.port}: connect: {_os_reason(exc.os_error)}"
    return str(exc) or type(exc).__name__


def _os_reason(exc: OSError) -> str:
    """Go's text for a failed connect (`connection refused`), from the errno."""
    return os.strerror(exc.errno).lower() if exc.errno else str(exc)


async def probe_tcp(target: str, timeout: float) -> tuple[str, str]:
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, int(port))
    except TimeoutError:
        return "critical", f"dial tcp {target}: i/o timeout"
    except (OSError, ValueError) as exc:
        cause = _os_reason(exc) if isinstance(exc, OSError) else str(exc)
        return "critical", f"dial tcp {target}: connect: {cause}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return "passing", f"TCP connect {target}: Success"


async def probe_grpc(spec: CheckType, timeout: float) -> tuple[str, str]:
    # Imported here: grpc is only needed by the few tests that register gRPC checks.
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server, _, service = spec.grpc.partition("/")
    if spec.grpc_use_tls:
        channel = grpc.aio.secure_channel(server, grpc.ssl_channel_credentials())
    else:
        channel = grpc.aio.insecure_channel(server)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        reply = await stub.Check(request, timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        code = exc.code().name.title().replace("_", "")
        return "critical", f"rpc error: code = {code} desc = {exc.details()}"
    finally:
        await channel.close()
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if status != "SERVING":
        return "critical", f"gRPC {spec.grpc} serving status: {status}"
    return "passing", f"gRPC check {spec.grpc}: success"

"""aiohttp: an aiohttp POST echo on uvloop (read the body, return it).

The client keeps one connection alive. `HttpClient` (blocking http.client, the body read
into a pre-faulted reused buffer) beat `SessionClient` (aiohttp ClientSession on uvloop,
`await response.read()`) in the same run on the 2-core VM at every size (4 KiB: 193 against
243 µs, 1 MiB: 1.18 against 1.75 ms, 64 MiB: 162 against 235 ms), so it is the default;
the session stays as the `aiohttp-session` variant.
"""

from __future__ import annotations

import asyncio
import http.client
from typing import Final

import numpy as np
import uvloop
from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

from bench._errors import EchoMismatch
from bench._memory import ReusedBuffer
from bench._units import MiB

from ._base import Payload, Ready, ServerArgs, host_port, time_each, time_each_async, write_ready

_PATH: Final = "/echo"
_HEADERS: Final = {"Content-Type": "application/octet-stream"}


async def _echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read(), content_type="application/octet-stream")


async def _serve(args: ServerArgs) -> None:
    app = web.Application(client_max_size=max(args.sizes, default=0) + MiB)
    app.router.add_post(_PATH, _echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    write_ready(args.ready_file, {"address": f"{host}:{port}"})
    await asyncio.Event().wait()  # until killed


def serve(args: ServerArgs) -> None:
    """Serve POST /echo on uvloop until killed."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(args))


class HttpClient:
    """A blocking http.client connection, kept alive across requests."""

    def __init__(self, ready: Ready) -> None:
        host, port = host_port(ready["address"])
        self._conn = http.client.HTTPConnection(host, port)
        self._buffer = ReusedBuffer()

    def echo(self, payload: Payload) -> Payload:
        """One round trip; the result is a view on the reused receive buffer."""
        self._conn.request("POST", _PATH, body=payload.data, headers=_HEADERS)
        response = self._conn.getresponse()
        nbytes = response.length
        if response.status != 200 or nbytes is None:
            raise EchoMismatch(f"aiohttp answered {response.status} {response.reason}")
        body = self._buffer.view(nbytes)
        got = 0
        while got < nbytes:
            count = response.readinto(body[got:])
            if not count:
                raise EchoMismatch("aiohttp server closed the connection mid-body")
            got += count
        return np.frombuffer(body, dtype=np.uint8)

    def round_trips(self, payload: Payload, reps: int) -> list[int]:
        """Time `reps` round trips, in nanoseconds each."""
        return time_each(self.echo, payload, reps)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


class SessionClient:
    """An aiohttp ClientSession on uvloop; each block of round trips runs in one coroutine."""

    def __init__(self, ready: Ready) -> None:
        self._url = f"http://{ready['address']}{_PATH}"
        self._loop = uvloop.new_event_loop()
        self._session = self._loop.run_until_complete(self._open())

    def echo(self, payload: Payload) -> Payload:
        """One round trip; the result is a read-only view on the reply bytes."""
        return self._loop.run_until_complete(self._echo(payload))

    def round_trips(self, payload: Payload, reps: int) -> list[int]:
        """Time `reps` round trips, in nanoseconds each."""
        return self._loop.run_until_complete(time_each_async(self._echo, payload, reps))

    def close(self) -> None:
        """Close the session and the loop."""
        self._loop.run_until_complete(self._session.close())
        self._loop.close()

    async def _open(self) -> ClientSession:
        timeout = ClientTimeout(total=None)  # bench/_watchdog.py bounds a hung call
        return ClientSession(connector=TCPConnector(limit=1), timeout=timeout)

    async def _echo(self, payload: Payload) -> Payload:
        async with self._session.post(self._url, data=payload.data, headers=_HEADERS) as r:
            return np.frombuffer(await r.read(), dtype=np.uint8)

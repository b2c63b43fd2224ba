"""An HTTP app for the passthrough fuzzer: 200 and a short JSON summary for any request.

Run as `python -m tests.fuzz._echo_app FD`, FD a listening socket the parent bound (so the
parent knows the port before this process starts). It never answers 5xx itself, so a 5xx
the fuzzer sees comes from the sidecar.
"""

from __future__ import annotations

import asyncio
import socket
import sys

from aiohttp import web


async def _echo(request: web.Request) -> web.Response:
    size = 0
    try:
        async for chunk in request.content.iter_any():
            size += len(chunk)
    except ConnectionResetError:  # the sidecar dropped the exchange: its caller went away
        raise web.HTTPBadRequest() from None
    return web.json_response({"method": request.method, "bytes": size})


async def _serve(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", _echo)
    runner = web.AppRunner(app, access_log=None, auto_decompress=False)  # bodies are opaque here
    await runner.setup()
    await web.SockSite(runner, sock).start()
    await asyncio.Event().wait()  # until SIGTERM ends the process


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1])))

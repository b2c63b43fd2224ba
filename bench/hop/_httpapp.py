"""The app behind the HTTP section: aiohttp on uvloop, as a Python model server would be.

`POST /echo` answers with the request's body and content type; `GET /healthz` answers
200, the sidecar's app health probe. A server module of `bench._child`.
"""

from __future__ import annotations

import asyncio

import uvloop
from aiohttp import web

from bench.peers._base import ServerArgs, write_ready

ECHO_PATH = "/echo"


async def _echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read(), content_type=request.content_type)


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _serve(args: ServerArgs) -> None:
    app = web.Application()
    app.router.add_post(ECHO_PATH, _echo)
    app.router.add_get("/healthz", _healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    write_ready(args.ready_file, {"address": f"{host}:{port}"})
    await asyncio.Event().wait()  # until terminated


def serve(args: ServerArgs) -> None:
    """Serve until terminated."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(args))

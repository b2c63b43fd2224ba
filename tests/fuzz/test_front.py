"""The local HTTP listener's front (sidecar._front) fed hostile HTTP on raw sockets.

The same generator and checks as the daemon's listeners (tests/fuzz/test_daemon_listeners):
requests aimed at the lane's path and at aiohttp's, framing conflicts, bad lengths,
pipelining, mutations, noise. Every case must get 4xx answers or a close (never a 500, a
hang or a malformed answer); honest requests get a 2xx. Afterwards every connection's
front has closed with nothing buffered and no lane request running, and the listener
still serves both sides.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from ..sidecar.test_front import Server, _start, post, read_answer
from . import _budget
from ._http_cases import HttpCases
from ._listen import Findings, Tally, bounded_gather, check_http_case

pytestmark = pytest.mark.timeout(_budget.timeout())

PATHS = ("/lane", "/lane?x=1", "/lanex", "/slow/1", "/upload", "/stream", "/", "/nosuch")
CASES = 200
CONCURRENCY = 8


async def test_hostile_http_gets_a_4xx_or_close_and_the_front_leaks_nothing() -> None:
    async for server in _start():
        await _fuzz(server)


async def _fuzz(server: Server) -> None:
    generator = HttpCases(_budget.rng("front"), PATHS, "/lane", ("POST",))
    count = _budget.cases(CASES)
    cases = [generator.next() for _ in range(count)]
    findings, tally = Findings("front"), Tally()

    def job(index: int) -> Callable[[], Awaitable[None]]:
        return lambda: check_http_case(server.address, index, cases[index], {}, findings, tally)

    await bounded_gather([job(i) for i in range(count)], CONCURRENCY)
    assert not findings.items, findings.report()
    answered = count - tally.statuses.get("closed", 0)
    assert answered > count // 2, f"too few answers to check: {tally.statuses}"
    async with asyncio.timeout(10):  # every connection's front is done with its case
        while any(front.open for front in server.fronts):  # noqa: ASYNC110  # no event for it
            await asyncio.sleep(0.02)
    left = [f for f in server.fronts if f.buffered or f.serving]
    assert not left, f"{len(left)} fronts closed holding bytes or a lane request"
    # Both sides still serve.
    reader, writer = await server.connect()
    writer.write(post("/lane", b"after") + b"GET /slow/2 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_answer(reader))[2] == b"lane:retfa"
    assert (await read_answer(reader))[2] == b"slow 2"

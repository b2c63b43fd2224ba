"""A real LinkServer on 127.0.0.1, fed hostile byte streams on raw sockets.

The server shares a shared-memory directory with the fuzzer, so hostile sessions can
negotiate shared memory with a real probe and send descriptors, real and forged. For each
case (see _mesh_cases): the answer is well-formed frames, starting with HELLO; input the
frame decoder refuses gets a GOAWAY before the close (unless the connection was reset,
which can drop the tail); honest sessions sent among the hostile ones get every reply;
nothing hangs. After all cases: the server still serves a normal client, and nothing is
left: no request in flight, no connection, no pooled buffer lent out, no shared-memory
lease on either side, and no exception reached the event loop.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pytest

from transport import (
    BufferPool,
    Header,
    Kind,
    Limits,
    LinkServer,
    Message,
    Placer,
    Reply,
    ShmDomain,
    connect,
    decode_tensors,
    encode_tensors,
)

from . import _budget
from ._listen import Findings, Tally, bounded_gather, check_mesh_case
from ._mesh_cases import MeshCases, ShmPeer

pytestmark = pytest.mark.timeout(_budget.timeout())

LIMITS: Final = Limits(
    max_message_size=1 << 20,
    max_header_size=8192,
    inline_threshold=100,
    chunk_size=4096,
    max_concurrent_streams=8,
)
CASES: Final = 240
CONCURRENCY: Final = 12


async def echo(message: Message, deadline: float | None, placer: Placer | None) -> Reply:
    """Decode every tensor (shared-memory ones too) and send them back over the network."""
    tensors = decode_tensors(message.header.tensors, message.body_view(), LIMITS, message.shared)
    metas, parts, body_len = encode_tensors(tensors, LIMITS)
    return Header(Kind.RESPONSE, body_len=body_len, tensors=metas), parts


@dataclass
class Served:
    server: LinkServer
    address: tuple[str, int]
    pool: BufferPool
    domain: ShmDomain
    peer: ShmPeer
    loop_errors: list[dict[str, Any]]


@pytest.fixture
async def served(shm_dir: Path) -> AsyncIterator[Served]:
    def domain() -> ShmDomain:  # files and pre-faulting: off the loop
        return ShmDomain(shm_dir, arena_size=1 << 20, slots=256, reap_interval=3600.0)

    server_domain, client_domain = await asyncio.gather(
        asyncio.to_thread(domain), asyncio.to_thread(domain)
    )
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    pool = BufferPool()
    server = LinkServer(echo, LIMITS, pool, server_domain)
    host, port = (await server.listen_tcp("127.0.0.1", 0)).rsplit(":", 1)
    peer = ShmPeer(client_domain, holder=server_domain.proc)
    try:
        yield Served(server, (host, int(port)), pool, server_domain, peer, errors)
    finally:
        await server.aclose()
        loop.set_exception_handler(None)
        peer.release_all()
        await asyncio.gather(
            asyncio.to_thread(client_domain.close), asyncio.to_thread(server_domain.close)
        )


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait for `predicate` (a counter with no event to wait on), failing after `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            delay = 0.005
            while not predicate():
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.1)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout} s waiting for {what}")


async def still_serves(served: Served) -> None:
    host, port = served.address
    link = await connect(f"{host}:{port}", limits=LIMITS)
    try:
        x = np.arange(1000, dtype=np.float64)
        metas, parts, body_len = encode_tensors({"x": x}, LIMITS)
        header = Header(Kind.REQUEST, "svc", "infer", body_len=body_len, tensors=metas)
        reply = await link.request(header, parts)
        got = decode_tensors(reply.header.tensors, reply.body_view(), LIMITS)["x"]
        np.testing.assert_array_equal(got, x)
        del reply, got
    finally:
        await link.aclose()


async def test_hostile_streams_get_goaway_or_close_and_leave_nothing_behind(served: Served) -> None:
    generator = MeshCases(_budget.rng("mesh-listener"), LIMITS, "svc", served.peer)
    # Cases touch shared memory (probes, placements): made off the loop, before sending.
    count = _budget.cases(CASES)
    cases = await asyncio.to_thread(lambda: [generator.next() for _ in range(count)])
    findings, tally = Findings("LinkServer"), Tally()

    def job(index: int) -> Callable[[], Awaitable[None]]:
        return lambda: check_mesh_case(
            served.address, index, cases[index], LIMITS, findings, tally, sniffing=False
        )

    await bounded_gather([job(i) for i in range(count)], CONCURRENCY)
    assert not findings.items, findings.report()
    assert tally.refused > count // 10, f"the GOAWAY check hardly ran: {tally}"
    assert tally.honoured > 0, f"no shared-memory descriptor was ever honoured: {tally}"

    await still_serves(served)
    server, pool = served.server, served.pool
    await eventually(lambda: server.connections == 0, "connections to close")
    await eventually(lambda: server.in_flight == 0, "requests to finish")
    cases.clear()
    gc.collect()
    await eventually(lambda: pool.stats().in_use == 0, "pooled buffers to come back")
    await eventually(lambda: served.domain.stats().leases == 0, "the server's leases to end")
    served.peer.release_all()
    assert served.peer.domain.stats().leases == 0
    assert not served.loop_errors, f"exceptions reached the event loop: {served.loop_errors[:3]}"

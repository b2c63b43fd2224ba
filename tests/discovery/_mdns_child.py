"""A child process for the mDNS tests, usually run inside a network namespace.

    python -m tests.discovery._mdns_child advertise INTERFACE ADDRESS SERVICE ID
        listens on ADDRESS:0 (TCP), registers the endpoint over mDNS on INTERFACE, prints
        {"event": "ready", "port": P, "t": T}, and serves until killed (SIGTERM: aclose).
    python -m tests.discovery._mdns_child watch INTERFACE SERVICE
        prints one line per watch event: {"event": "snapshot", "ids": [...], "rejected": N,
        "t": T} or {"event": "outage", "reason": R, "t": T}.

T is time.monotonic(): CLOCK_MONOTONIC is one clock for every process on the machine,
whatever its namespace, so the test compares it with its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time

from discovery import Endpoint, Outage
from discovery._mdns import MdnsRegistry


def emit(**fields: object) -> None:
    sys.stdout.write(json.dumps({**fields, "t": time.monotonic()}) + "\n")
    sys.stdout.flush()


async def advertise(interface: str, address: str, service: str, endpoint_id: str) -> None:
    server = await asyncio.start_server(lambda _r, w: w.close(), address, 0)
    port = server.sockets[0].getsockname()[1]
    async with server, MdnsRegistry([interface]) as registry:
        await registry.register(Endpoint(service, endpoint_id, address, port))
        emit(event="ready", port=port)
        await asyncio.Event().wait()  # until SIGTERM cancels us, or SIGKILL


async def watch(interface: str, service: str) -> None:
    async with MdnsRegistry([interface]) as registry:
        async for event in registry.watch(service):
            if isinstance(event, Outage):
                emit(event="outage", reason=event.reason)
            else:
                ids = [e.id for e in event.endpoints]
                emit(event="snapshot", ids=ids, rejected=event.rejected)


async def run(argv: list[str]) -> None:
    """Run the command until it ends or SIGTERM cancels it (then the registry closes)."""
    if argv[0] == "advertise":
        task = asyncio.ensure_future(advertise(*argv[1:5]))
    elif argv[0] == "watch":
        task = asyncio.ensure_future(watch(*argv[1:3]))
    else:
        raise SystemExit(f"unknown command {argv[0]!r}")
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def main(argv: list[str]) -> None:
    if level := os.environ.get("MDNS_CHILD_LOG"):  # e.g. DEBUG, to diagnose a failing test
        prefix = f"%(relativeCreated)d {argv[0]} {argv[1]} %(name)s"
        logging.basicConfig(level=level, format=f"{prefix} %(message)s")
        logging.getLogger("zeroconf").setLevel(level)  # zeroconf sets its own to WARNING
    asyncio.run(run(argv))


if __name__ == "__main__":
    main(sys.argv[1:])

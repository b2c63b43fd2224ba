"""The faults the soak injects, each an async function of the stack returning what it did.

Replica and registry faults act on the processes (signals, restarts); client faults talk
to the caller sidecar's listeners on raw sockets, as a broken or hostile client would.
After a client fault the sidecar must still be ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import numpy as np

from bench.hop._children import Child
from transport import Header, Kind, Limits, encode_tensors, pack_header
from transport._frame import FrameType, data_frames, frame_header, head_frame, hello_frame

if TYPE_CHECKING:
    from ._main import Stack

HANG_S: Final = 3.0
OUTAGE_S: Final = 4.0
TRICKLE_S: Final = 3.0
TRICKLE_EVERY_S: Final = 0.2
_EXIT_TIMEOUT_S: Final = 10.0
_REPLY_TIMEOUT_S: Final = 5.0


async def kill_replica(stack: Stack) -> str:
    """SIGKILL a replica (its app and its sidecar), then start a new one in its place."""
    index = _next_replica(stack, "kill")
    app, side = stack.replicas[index]
    for child in (app, side):
        child.process.kill()
    for child in (app, side):
        await asyncio.to_thread(child.process.wait, _EXIT_TIMEOUT_S)
    started = time.monotonic()
    await asyncio.to_thread(stack.start_replica, index)
    return f"replica {index} killed, a new one ready in {time.monotonic() - started:.1f} s"


async def hang_replica(stack: Stack) -> str:
    """SIGSTOP a replica's app and sidecar for HANG_S, then SIGCONT them."""
    index = _next_replica(stack, "hang")
    app, side = stack.replicas[index]
    _signal([app, side], signal.SIGSTOP)
    try:
        await asyncio.sleep(HANG_S)
    finally:
        _signal([app, side], signal.SIGCONT)
    return f"replica {index} stopped for {HANG_S:g} s"


async def restart_registry(stack: Stack) -> str:
    """SIGKILL the Consul emulator and start it again on its port, empty."""
    assert stack.emulator is not None
    stack.emulator.process.kill()
    await asyncio.to_thread(stack.emulator.process.wait, _EXIT_TIMEOUT_S)
    started = time.monotonic()
    await asyncio.to_thread(stack.start_emulator)
    return f"emulator restarted empty, ready in {time.monotonic() - started:.1f} s"


async def registry_outage(stack: Stack) -> str:
    """SIGSTOP the Consul emulator for OUTAGE_S: its port accepts, nothing answers."""
    assert stack.emulator is not None
    _signal([stack.emulator], signal.SIGSTOP)
    try:
        await asyncio.sleep(OUTAGE_S)
    finally:
        _signal([stack.emulator], signal.SIGCONT)
    return f"emulator stopped for {OUTAGE_S:g} s"


async def slow_loris(stack: Stack) -> str:
    """Trickle a frame into the mesh port and a request into the HTTP port, a byte at a time."""
    frame = hello_frame() + head_frame_bytes(1, Header(Kind.PING))
    http = b"POST /svc/soak/echo HTTP/1.1\r\nHost: soak\r\nContent-Length: 100\r\n\r\n"
    outcomes = await asyncio.gather(
        _trickle(stack.caller_mesh, frame), _trickle(stack.caller_http, http)
    )
    await _still_ready(stack)
    return f"mesh port: {outcomes[0]}; HTTP port: {outcomes[1]}; sidecar still ready"


async def oversized_message(stack: Stack) -> str:
    """A HEAD frame announcing a 1 GiB header: the sidecar must refuse it and close."""
    reader, writer = await _open(stack.caller_mesh)
    try:
        writer.write(hello_frame() + frame_header(FrameType.HEAD, 1, 1 << 30))
        await writer.drain()
        answer = await _read_until_closed(reader)
    finally:
        writer.close()
    await _still_ready(stack)
    said = "GOAWAY" if b"AM" in answer[:64] else "closed"
    return f"1 GiB header refused ({said}, {len(answer)} bytes back); sidecar still ready"


async def disconnect_mid_transfer(stack: Stack) -> str:
    """A request announcing an 8 MiB body; 1 MiB of it is sent, then the socket closes."""
    limits = Limits()
    metas, parts, body_len = encode_tensors({"x": np.zeros(2 << 20, dtype=np.float32)}, limits)
    header = Header(Kind.REQUEST, "soak", "infer", body_len=body_len, tensors=metas)
    first = next(data_frames(1, parts, 1 << 20))
    _, writer = await _open(stack.caller_mesh)
    try:
        writer.write(hello_frame() + head_frame_bytes(1, header))
        writer.writelines(first)
        await writer.drain()
    finally:
        writer.close()
    await _still_ready(stack)
    return f"{body_len >> 20} MiB request cut off after 1 MiB; sidecar still ready"


FAULTS: Final[dict[str, Callable[[Stack], Awaitable[str]]]] = {
    "replica SIGKILL + restart": kill_replica,
    "slow-loris client": slow_loris,
    "replica SIGSTOP (hang)": hang_replica,
    "oversized message": oversized_message,
    "Consul emulator restart": restart_registry,
    "peer disconnects mid-transfer": disconnect_mid_transfer,
    "Consul emulator outage": registry_outage,
}


def head_frame_bytes(stream: int, header: Header) -> bytes:
    """A whole HEAD frame for `header`, as bytes."""
    return b"".join(bytes(part) for part in head_frame(stream, pack_header(header)))


def _next_replica(stack: Stack, fault: str) -> int:
    stack.generation[f"fault-{fault}"] += 1
    return (stack.generation[f"fault-{fault}"] - 1) % len(stack.replicas)


def _signal(targets: list[Child], signum: signal.Signals) -> None:
    """Send `signum` to each of `targets` that still runs."""
    for child in targets:
        if child.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)


async def _open(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, _, port = address.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def _trickle(address: str, data: bytes) -> str:
    """Send `data` a byte every TRICKLE_EVERY_S for up to TRICKLE_S; how the server took it."""
    reader, writer = await _open(address)
    started = time.monotonic()
    try:
        for byte in data:
            if time.monotonic() - started > TRICKLE_S:
                return f"still open after {TRICKLE_S:g} s of trickling (a connection, no request)"
            writer.write(bytes([byte]))
            try:
                await writer.drain()
            except ConnectionError:
                return f"closed by the sidecar after {time.monotonic() - started:.1f} s"
            if reader.at_eof():
                return f"closed by the sidecar after {time.monotonic() - started:.1f} s"
            await asyncio.sleep(TRICKLE_EVERY_S)
        return "whole request trickled in"
    finally:
        writer.close()


async def _read_until_closed(reader: asyncio.StreamReader) -> bytes:
    try:
        async with asyncio.timeout(_REPLY_TIMEOUT_S):
            return await reader.read()
    except (TimeoutError, ConnectionError):
        return b""


async def _still_ready(stack: Stack) -> None:
    """Raise OSError unless the caller sidecar's /readyz answers 200."""
    url = f"http://{stack.caller_admin}/readyz"

    def ask() -> int:
        try:
            with urllib.request.urlopen(url, timeout=5.0) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    status = await asyncio.to_thread(ask)
    if status != 200:
        raise OSError(f"the caller sidecar is not ready after the fault (/readyz {status})")

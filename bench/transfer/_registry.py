"""The transports `bench transfer` knows: a name, the server module, a client factory.

Adding a transport: a module in bench/peers with `serve(ServerArgs)` and a client class,
a three-line factory below, and one `Transport(...)` line. Transports that name the same
server module share one server child (arrowmesh tcp and uds; gRPC unary and stream).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from bench.peers._base import Client, Ready

OURS: Final = "arrowmesh-tcp"
FLOOR: Final = "tcp-raw"


@dataclass(frozen=True, slots=True)
class Transport:
    """A transport under test. Client modules import lazily, so `--help` stays fast."""

    name: str
    server: str
    connect: Callable[[Ready], Client]


def _arrowmesh_tcp(ready: Ready) -> Client:
    from bench.peers import _arrowmesh

    return _arrowmesh.tcp(ready)


def _arrowmesh_tcp_async(ready: Ready) -> Client:
    from bench.peers import _arrowmesh

    return _arrowmesh.tcp_async(ready)


def _arrowmesh_uds(ready: Ready) -> Client:
    from bench.peers import _arrowmesh

    return _arrowmesh.uds(ready)


def _tcp_raw(ready: Ready) -> Client:
    from bench.peers._rawtcp import RawTcpClient

    return RawTcpClient(ready)


def _grpc_unary(ready: Ready) -> Client:
    from bench.peers._grpc import UnaryClient

    return UnaryClient(ready)


def _grpc_stream(ready: Ready) -> Client:
    from bench.peers._grpc import StreamClient

    return StreamClient(ready)


def _flight(ready: Ready) -> Client:
    from bench.peers._flight import FlightEchoClient

    return FlightEchoClient(ready)


def _aiohttp(ready: Ready) -> Client:
    from bench.peers._aiohttp import HttpClient

    return HttpClient(ready)


def _aiohttp_session(ready: Ready) -> Client:
    from bench.peers._aiohttp import SessionClient

    return SessionClient(ready)


_MESH: Final = "bench.peers._arrowmesh"
_GRPC: Final = "bench.peers._grpc"
_AIOHTTP: Final = "bench.peers._aiohttp"

_CORE: Final = (
    Transport(OURS, _MESH, _arrowmesh_tcp),
    Transport("arrowmesh-uds", _MESH, _arrowmesh_uds),
    Transport(FLOOR, "bench.peers._rawtcp", _tcp_raw),
    Transport("grpc-unary", _GRPC, _grpc_unary),
    Transport("grpc-stream-1MiB", _GRPC, _grpc_stream),
    Transport("flight", "bench.peers._flight", _flight),
    Transport("aiohttp", _AIOHTTP, _aiohttp),
)

# Not run by default: the client variants measured against the defaults to choose them
# (see bench/peers/_arrowmesh.py and _aiohttp.py); `--transports` runs them.
_VARIANTS: Final = (
    Transport("arrowmesh-tcp-async", _MESH, _arrowmesh_tcp_async),
    Transport("aiohttp-session", _AIOHTTP, _aiohttp_session),
)


def _optional() -> list[Transport]:
    """Transports whose libraries may be missing (issue 4: shared memory, Ray)."""
    found: list[Transport] = []
    if importlib.util.find_spec("ray") is not None:
        pass  # issue 4: found.append(Transport("ray-put+get", "bench.peers._ray", _ray))
    return found


def default_transports() -> tuple[Transport, ...]:
    """What `bench transfer` runs without --transports: ours, the floor, every peer."""
    return (*_CORE, *_optional())


def select(names: Sequence[str]) -> tuple[Transport, ...]:
    """The transports called `names`, in the given order. Raises ValueError for unknown names."""
    known = {t.name: t for t in (*_CORE, *_VARIANTS, *_optional())}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown transports {unknown}; choose from {sorted(known)}")
    return tuple(known[name] for name in dict.fromkeys(names))

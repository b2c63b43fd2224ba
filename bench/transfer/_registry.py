"""The transports `bench transfer` knows: a name, the server module, a client factory.

Adding a transport: a module in bench/peers with `serve(ServerArgs)` and a client class,
a three-line factory below, and one `Transport(...)` line. Transports that name the same
server module share one server child (arrowmesh tcp, uds and the shm modes; gRPC unary
and stream; the two shm floors).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from bench.peers._base import Client, Ready

OURS: Final = "arrowmesh-tcp"
FLOOR: Final = "tcp-raw"
SHM_COPY: Final = "arrowmesh-shm-copy"
SHM_ZEROCOPY: Final = "arrowmesh-shm-zerocopy"
SHM_ARROW: Final = "arrowmesh-shm-arrow"
COPY_FLOOR: Final = "shm-2memcpy-floor"
DESCRIPTOR_FLOOR: Final = "shm-descriptor-floor"
RAY: Final = "ray-put-get"
_BENCH_EXTRA: Final = "pip install 'arrowmesh[bench]' to include it"

# What each shared-memory path is measured against: copying paths against two memcpy,
# the by-reference path against the bare handoff.
SHM_FLOORS: Final[Mapping[str, str]] = {
    SHM_COPY: COPY_FLOOR,
    SHM_ARROW: COPY_FLOOR,
    SHM_ZEROCOPY: DESCRIPTOR_FLOOR,
    COPY_FLOOR: COPY_FLOOR,
    DESCRIPTOR_FLOOR: DESCRIPTOR_FLOOR,
}


@dataclass(frozen=True, slots=True)
class Transport:
    """A transport under test. Client modules import lazily, so `--help` stays fast."""

    name: str
    server: str
    connect: Callable[[Ready], Client]


@dataclass(frozen=True, slots=True)
class Skipped:
    """A transport left out of this run, why, and what to do to include it."""

    name: str
    reason: str
    hint: str

    def note(self) -> str:
        """ "ray not installed: pip install 'arrowmesh[bench]' to include it"."""
        return f"{self.reason}: {self.hint}"


def _arrowmesh_tcp(ready: Ready) -> Client:
    from bench.peers import _arrowmesh

    return _arrowmesh.tcp(ready)


def _arrowmesh_tcp_async(ready: Ready) -> Client:
    from bench.peers import _arrowmesh

    return _arrowmesh.tcp_async(ready)


def _arrowmesh_uds(ready: Ready) -> Client:
    from bench.peers import _arrowmesh

    return _arrowmesh.uds(ready)


def _shm_copy(ready: Ready) -> Client:
    from bench.peers import _arrowmesh_shm

    return _arrowmesh_shm.copy(ready)


def _shm_zerocopy(ready: Ready) -> Client:
    from bench.peers import _arrowmesh_shm

    return _arrowmesh_shm.zerocopy(ready)


def _shm_arrow(ready: Ready) -> Client:
    from bench.peers import _arrowmesh_shm

    return _arrowmesh_shm.arrow(ready)


def _copy_floor(ready: Ready) -> Client:
    from bench.peers import _shmfloor

    return _shmfloor.copy_floor(ready)


def _descriptor_floor(ready: Ready) -> Client:
    from bench.peers import _shmfloor

    return _shmfloor.descriptor_floor(ready)


def _ray(ready: Ready) -> Client:
    from bench.peers._ray import RayClient

    return RayClient(ready)


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
_SHM_FLOOR: Final = "bench.peers._shmfloor"

_CORE: Final = (
    Transport(OURS, _MESH, _arrowmesh_tcp),
    Transport("arrowmesh-uds", _MESH, _arrowmesh_uds),
    Transport(SHM_COPY, _MESH, _shm_copy),
    Transport(SHM_ZEROCOPY, _MESH, _shm_zerocopy),
    Transport(SHM_ARROW, _MESH, _shm_arrow),
    Transport(FLOOR, "bench.peers._rawtcp", _tcp_raw),
    Transport(COPY_FLOOR, _SHM_FLOOR, _copy_floor),
    Transport(DESCRIPTOR_FLOOR, _SHM_FLOOR, _descriptor_floor),
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


@dataclass(frozen=True, slots=True)
class _Extra:
    """A peer whose library comes with the optional `bench` extra."""

    transport: Transport
    module: str

    def missing(self) -> Skipped | None:
        """Why the peer cannot run here, or None when its library is installed."""
        if importlib.util.find_spec(self.module) is not None:
            return None
        return Skipped(self.transport.name, f"{self.module} not installed", _BENCH_EXTRA)


_OPTIONAL: Final = (_Extra(Transport(RAY, "bench.peers._ray", _ray), "ray"),)


def default_transports() -> tuple[Transport, ...]:
    """What `bench transfer` runs without --transports: ours, the floors, every peer found."""
    return (*_CORE, *(extra.transport for extra in _OPTIONAL if extra.missing() is None))


def skipped_by_default() -> tuple[Skipped, ...]:
    """The optional peers the default run leaves out, each with what to install."""
    return tuple(skip for extra in _OPTIONAL if (skip := extra.missing()) is not None)


def select(names: Sequence[str]) -> tuple[Transport, ...]:
    """The transports called `names`, in the given order.

    Raises ValueError for an unknown name, or for an optional peer that is not installed.
    """
    missing = [
        skip.note()
        for extra in _OPTIONAL
        if extra.transport.name in names and (skip := extra.missing()) is not None
    ]
    if missing:
        raise ValueError("; ".join(missing))
    known = {t.name: t for t in (*_CORE, *_VARIANTS, *(extra.transport for extra in _OPTIONAL))}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown transports {unknown}; choose from {sorted(known)}")
    return tuple(known[name] for name in dict.fromkeys(names))

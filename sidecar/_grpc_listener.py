"""The local gRPC listener: the Open Inference Protocol's gRPC service (sidecar.oip) and
standard gRPC health (grpcio-health-checking)."""

from __future__ import annotations

from typing import Final

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from ._errors import ConfigError
from ._settings import format_host_port, parse_host_port
from .oip import OipGrpcService, OipServer, grpc_options
from .oip._grpc import Lane

_STOP_GRACE: Final = 2.0


class GrpcSide:
    """A grpc.aio server with the OIP service over `oip` (ModelInfer through `lane` where
    it takes it) and the health service, which says SERVING while the sidecar is ready."""

    def __init__(self, oip: OipServer, lane: Lane | None = None) -> None:
        self._oip = oip
        self._lane = lane
        self._server: grpc.aio.Server | None = None
        self._health = HealthServicer()
        self._ready: bool | None = None

    async def start(self, address: str) -> str:
        """Listen on HOST:PORT; the bound "host:port". Raises ConfigError naming --grpc-addr."""
        host, port = parse_host_port(address)
        server = grpc.aio.server(options=grpc_options(self._oip.limits))
        server.add_generic_rpc_handlers((OipGrpcService(self._oip, self._lane).handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        try:
            bound = server.add_insecure_port(format_host_port(host, port))
        except RuntimeError as exc:
            raise ConfigError(f"listener (--grpc-addr) cannot bind {address}: {exc}") from None
        if bound == 0:
            raise ConfigError(f"listener (--grpc-addr) cannot bind {address}")
        await server.start()
        self._server = server
        return format_host_port(host, bound)

    async def set_ready(self, ready: bool) -> None:
        """Report SERVING or NOT_SERVING for the server as a whole ("")."""
        if ready == self._ready:
            return
        self._ready = ready
        response = health_pb2.HealthCheckResponse
        await self._health.set("", response.SERVING if ready else response.NOT_SERVING)

    async def aclose(self) -> None:
        """Stop serving (bounded grace for calls in progress)."""
        if self._server is not None:
            await self._health.enter_graceful_shutdown()
            await self._server.stop(_STOP_GRACE)
            self._server = None

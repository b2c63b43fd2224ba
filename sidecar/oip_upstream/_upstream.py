"""A sidecar's app that speaks the Open Inference Protocol (`--app-protocol oip-http|oip-grpc`).

A mesh request for the sidecar's own service is decoded (a sidecar that only forwards
never does; this app reads OIP, not mesh messages), sent to the model server as an OIP
infer request for model `model` (the service name unless `--app-model` says otherwise),
and the server's outputs are encoded as the mesh reply, into shared memory when the
caller shares it. A "metadata" request is answered with the model's inputs and outputs
from its OIP metadata, as a `serve()` replica answers with its declared signature. The
server's errors become mesh errors with its message (see _status); a server that cannot
be reached is UNAVAILABLE, which callers retry on another endpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import transport
from transport import BodyPart, ErrorCode, Header, Kind, Limits, Message, Placer

from ._grpc import GrpcClient
from ._http import HttpClient
from ._tensors import Array, Scalar, request_parameters

Encoding = Literal["auto", "binary", "json"]
OipProtocol = Literal["oip-http", "oip-grpc"]


class OipClient(Protocol):
    """One OIP model server, over HTTP or gRPC."""

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, Array],
        parameters: Mapping[str, Scalar],
        timeout: float | None,
        traceparent: str | None,
    ) -> dict[str, Array]:
        """The outputs of `model` for `inputs`; `timeout` is the caller's remaining budget
        in seconds (None: no deadline). Raises transport.RemoteError."""

    async def signature(self, model: str) -> dict[str, object]:
        """`model`'s inputs and outputs as a mesh "metadata" reply's parameters. Raises
        transport.RemoteError."""

    async def ready(self, model: str) -> bool:
        """True if the server and `model` are ready."""

    @property
    def binary(self) -> bool | None:
        """True if the server takes the binary tensor extension (None: not known yet)."""

    async def aclose(self) -> None:
        """Close connections to the server."""


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """Where the OIP app is and how to talk to it."""

    url: str
    protocol: OipProtocol
    model: str
    encoding: Encoding = "auto"

    def __post_init__(self) -> None:
        if self.protocol not in ("oip-http", "oip-grpc"):
            raise ValueError(f"protocol {self.protocol!r} is not oip-http or oip-grpc")
        if not self.model:
            raise ValueError("the app's model name must not be empty")
        if self.encoding not in ("auto", "binary", "json"):
            raise ValueError(f"encoding {self.encoding!r} is not auto, binary or json")


class OipUpstream:
    """The OIP model server a sidecar fronts: mesh requests in, OIP requests out."""

    def __init__(self, config: UpstreamConfig, limits: Limits) -> None:
        self.config = config
        self._limits = limits
        self._client: OipClient = (
            HttpClient(config.url, config.encoding)
            if config.protocol == "oip-http"
            else GrpcClient(config.url)
        )

    async def handle(
        self, message: Message, deadline: float | None, placer: Placer | None
    ) -> tuple[Header, list[BodyPart]]:
        """The mesh reply to `message`: its tensors run through the server's model, or for
        a "metadata" request, the model's inputs and outputs as `serve()` declares them.

        Raises transport.FrameError for tensors that do not decode, transport.RemoteError
        with the server's error (or UNAVAILABLE when it cannot be reached).
        """
        header = message.header
        if header.method == "metadata":
            signature = await self._client.signature(self.config.model)
            return Header(Kind.RESPONSE, traceparent=header.traceparent, params=signature), []
        if header.method not in ("", "infer"):
            raise transport.RemoteError(ErrorCode.NOT_FOUND, f"unknown method {header.method!r}")
        inputs = transport.decode_tensors(
            header.tensors, message.body_view(), self._limits, message.shared
        )
        parameters = request_parameters(header.params)
        timeout = None
        if deadline is not None:
            timeout = max(deadline - asyncio.get_running_loop().time(), 0.0)
        outputs = await self._client.infer(
            self.config.model, inputs, parameters, timeout, header.traceparent
        )
        del inputs  # views on the request's body or shared memory: released with it
        try:
            metas, parts, body_len, body_ref = transport.encode_message(
                outputs, self._limits, placer
            )
        except transport.TransportError as exc:
            raise transport.RemoteError(
                transport.error_code_of(exc), f"the app's outputs cannot be sent: {exc}"
            ) from exc
        reply = Header(
            Kind.RESPONSE,
            traceparent=header.traceparent,
            body_len=body_len,
            tensors=metas,
            body_ref=body_ref,
        )
        return reply, parts

    @property
    def binary(self) -> bool | None:
        """True if the server takes the binary tensor extension (None: not known yet; the
        first probe or request finds out)."""
        return self._client.binary

    async def probe(self) -> bool:
        """True if the server answers ready, and so does the model (OIP health calls)."""
        return await self._client.ready(self.config.model)

    async def aclose(self) -> None:
        """Close connections to the server."""
        await self._client.aclose()

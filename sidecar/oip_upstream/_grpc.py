"""OIP over gRPC to the fronted server, with tritonclient's asyncio client.

Tensors always travel in `raw_input_contents` / `raw_output_contents`: they are part of
the gRPC protocol itself (not an extension), and Triton and MLServer both read them. The
request's remaining budget goes along as the gRPC deadline, so the server can give up
when the caller has.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

import tritonclient.grpc.aio as oip_grpc
from tritonclient.utils import InferenceServerException

import transport

from ._status import upstream_error
from ._tensors import Array, Scalar, mesh_output, signature_of, unreadable

logger = logging.getLogger(__name__)

PROTOCOL: Final = "oip-grpc"
# gRPC waits up to 120 s between reconnect attempts to a server that was down; the health
# probe would report a restarted server unready that long. One second, as the probe.
_MAX_RECONNECT_BACKOFF_MS: Final = 1000


class GrpcClient:
    """One OIP gRPC server at `url` (grpc[s]://host:port)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._url = url
        self._target = parts.netloc
        self._ssl = parts.scheme == "grpcs"
        self._client: oip_grpc.InferenceServerClient | None = None

    def _channel(self) -> oip_grpc.InferenceServerClient:
        # Made on first use, inside the event loop the channel then belongs to.
        if self._client is None:
            self._client = oip_grpc.InferenceServerClient(
                self._target, ssl=self._ssl, channel_args=_channel_args()
            )
        return self._client

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, Array],
        parameters: Mapping[str, Scalar],
        timeout: float | None,
        traceparent: str | None,
    ) -> dict[str, Array]:
        """The outputs of `model` for `inputs`. Raises transport.RemoteError."""
        client = self._channel()
        request = []
        for name, array in inputs.items():
            tensor = oip_grpc.InferInput(name, list(array.shape), transport.datatype_of(array))
            tensor.set_data_from_numpy(array)
            request.append(tensor)
        try:
            result = await client.infer(
                model,
                request,
                parameters=dict(parameters) or None,
                client_timeout=timeout,
                headers=None if traceparent is None else {"traceparent": traceparent},
            )
        except InferenceServerException as exc:
            raise upstream_error(PROTOCOL, exc.status(), str(exc.message())) from None
        try:
            return {
                o.name: mesh_output(o.name, o.datatype, result.as_numpy(o.name))
                for o in result.get_response().outputs
            }
        except (ValueError, KeyError, TypeError) as exc:  # an answer that does not add up
            raise unreadable(self._url, exc) from exc

    async def signature(self, model: str) -> dict[str, object]:
        """`model`'s inputs and outputs, from its OIP metadata. Raises transport.RemoteError."""
        client = self._channel()
        try:
            # As JSON, int64 dimensions are strings: signature_of reads them with int().
            metadata = await client.get_model_metadata(model, as_json=True)
        except InferenceServerException as exc:
            raise upstream_error(PROTOCOL, exc.status(), str(exc.message())) from None
        try:
            return signature_of(metadata)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise unreadable(self._url, exc) from exc

    async def ready(self, model: str) -> bool:
        """True if the server and `model` are ready (OIP ServerReady and ModelReady)."""
        client = self._channel()
        try:
            return bool(await client.is_server_ready()) and bool(await client.is_model_ready(model))
        except Exception:  # a probe: whatever went wrong, the app is not ready
            logger.debug("app probe failed", exc_info=True)
            return False

    @property
    def binary(self) -> bool | None:
        """Always True: tensors go as raw_input_contents."""
        return True

    async def aclose(self) -> None:
        """Close the channel to the server."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()


def _channel_args() -> list[tuple[str, int]]:
    """tritonclient's own channel options (no message size cap, its keepalive), with a
    reconnect back-off that follows a restarted server within about a second."""
    keepalive = oip_grpc.KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", oip_grpc.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", oip_grpc.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", _MAX_RECONNECT_BACKOFF_MS),
        ("grpc.max_reconnect_backoff_ms", _MAX_RECONNECT_BACKOFF_MS),
    ]

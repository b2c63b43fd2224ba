"""OIP over HTTP to the fronted server, with tritonclient's asyncio client.

Tensors go in the binary tensor data extension when the server lists `binary_tensor_data`
among its extensions (its server metadata, read once it is ready) or `app_encoding` says
so, and as JSON otherwise: MLServer, for one, has no binary extension. A JSON request
carries `Content-Type: application/json`, which tritonclient leaves out and FastAPI-based
servers (MLServer) need to read the body at all (without it: 422 "Input should be a valid
dictionary"). The answer is read as the server sent it, binary or JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

import aiohttp
import tritonclient.http.aio as oip_http
from tritonclient.utils import InferenceServerException

import transport
from transport import ErrorCode

from ._status import upstream_error
from ._tensors import Array, Scalar, mesh_output, signature_of, unreadable

logger = logging.getLogger(__name__)

PROTOCOL: Final = "oip-http"
BINARY_EXTENSION: Final = "binary_tensor_data"
_JSON: Final = {"Content-Type": "application/json"}
_IDENTITY: Final = {"Accept-Encoding": "identity"}


class HttpClient:
    """One OIP HTTP server at `url` (http[s]://host:port[/base]); `encoding` as the setting."""

    def __init__(self, url: str, encoding: str) -> None:
        parts = urlsplit(url)
        self._url = url
        self._target = parts.netloc + parts.path.rstrip("/")
        self._ssl = parts.scheme == "https"
        self._auto = encoding == "auto"
        self._binary: bool | None = None if self._auto else encoding == "binary"
        self._client: oip_http.InferenceServerClient | None = None

    def _session(self) -> oip_http.InferenceServerClient:
        # Made on first use, inside the event loop (aiohttp sessions belong to one loop).
        # No total timeout: the mesh request's deadline bounds each call.
        if self._client is None:
            self._client = oip_http.InferenceServerClient(
                self._target, ssl=self._ssl, conn_timeout=None
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
        """The outputs of `model` for `inputs`. Raises transport.RemoteError.

        `timeout` is not sent: OIP over HTTP has no deadline a server reads (Triton's
        `timeout` parameter bounds only its queue, under a queue policy). The caller's
        deadline cancels the request here instead, which closes the connection.
        """
        client = self._session()
        try:
            binary = await self._binary_data(client)
            request = [_input(name, array, binary) for name, array in inputs.items()]
            # Identity answers: aiohttp asks for gzip by default, and Triton then compresses
            # every answer (a 64 MiB output took ~1 s to inflate here, more to deflate there).
            headers = {**_IDENTITY, **({} if binary else _JSON)}
            if traceparent is not None:
                headers["traceparent"] = traceparent
            result = await client.infer(
                model, request, parameters=dict(parameters) or None, headers=headers
            )
        except InferenceServerException as exc:
            raise upstream_error(PROTOCOL, exc.status(), str(exc.message())) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise transport.RemoteError(
                ErrorCode.UNAVAILABLE, f"the app at {self._url} cannot be reached: {exc}"
            ) from exc
        try:
            return {
                str(o["name"]): mesh_output(o["name"], o["datatype"], result.as_numpy(o["name"]))
                for o in result.get_response().get("outputs") or []
            }
        except (ValueError, KeyError, TypeError) as exc:  # an answer that does not add up
            raise unreadable(self._url, exc) from exc

    async def signature(self, model: str) -> dict[str, object]:
        """`model`'s inputs and outputs, from its OIP metadata. Raises transport.RemoteError."""
        client = self._session()
        try:
            metadata = await client.get_model_metadata(model)
        except InferenceServerException as exc:
            raise upstream_error(PROTOCOL, exc.status(), str(exc.message())) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise transport.RemoteError(
                ErrorCode.UNAVAILABLE, f"the app at {self._url} cannot be reached: {exc}"
            ) from exc
        try:
            return signature_of(metadata)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise unreadable(self._url, exc) from exc

    async def ready(self, model: str) -> bool:
        """True if the server and `model` are ready (OIP server-ready and model-ready).

        Any failure of those calls (or of reading the server's metadata) is "not ready".
        """
        client = self._session()
        try:
            ready = bool(await client.is_server_ready()) and bool(
                await client.is_model_ready(model)
            )
            if ready and self._binary is None:
                await self._binary_data(client)
        except Exception:  # a probe: whatever went wrong, the app is not ready
            logger.debug("app probe failed", exc_info=True)
            ready = False
        if not ready and self._auto:
            self._binary = None  # what answers next may be another server: ask it again
        return ready

    async def _binary_data(self, client: oip_http.InferenceServerClient) -> bool:
        if self._binary is None:
            try:
                metadata = await client.get_server_metadata()
                binary = BINARY_EXTENSION in (metadata.get("extensions") or [])
            except (ValueError, AttributeError, TypeError) as exc:  # not an OIP server's JSON
                raise unreadable(self._url, exc) from exc
            self._binary = binary
            logger.info(
                "app tensor encoding",
                extra={
                    "app": self._url,
                    "server": f"{metadata.get('name')} {metadata.get('version')}",
                    "encoding": "binary" if self._binary else "json",
                },
            )
        return self._binary

    @property
    def binary(self) -> bool | None:
        """True if tensors go to the server in the binary extension (None: not known yet)."""
        return self._binary

    async def aclose(self) -> None:
        """Close the connections to the server."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()


def _input(name: str, array: Array, binary: bool) -> oip_http.InferInput:
    datatype = transport.datatype_of(array)
    tensor = oip_http.InferInput(name, list(array.shape), datatype)
    try:
        tensor.set_data_from_numpy(array, binary_data=binary)
    except InferenceServerException as exc:
        why = (
            ""
            if binary
            else " as JSON (the app has no binary tensor extension, or app_encoding=json)"
        )
        raise transport.RemoteError(
            ErrorCode.INVALID_ARGUMENT,
            f"tensor {name!r} ({datatype}) cannot be sent{why}: {exc.message()}",
            f"{PROTOCOL} client",
        ) from None
    return tensor

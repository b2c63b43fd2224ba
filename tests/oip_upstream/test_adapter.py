"""The upstream adapter's cores and edges without a model server: error tables, parameters,
settings, and a server that is not there."""

from __future__ import annotations

import gc
import socket

import numpy as np
import pytest
from aiohttp import web
from blockbuster import BlockBuster

import transport
from sidecar import STATUS
from sidecar._daemon import _oip_upstream
from sidecar._settings import Settings
from sidecar.oip_upstream import (
    GRPC_CODES,
    OipUpstream,
    UpstreamConfig,
    code_of_grpc,
    code_of_http,
    request_parameters,
    upstream_error,
)
from sidecar.oip_upstream._status import MAX_MESSAGE
from sidecar.oip_upstream._tensors import mesh_output, signature_of
from transport import ErrorCode, Header, Kind, Limits, Message


@pytest.mark.parametrize("code", [c for c in ErrorCode if c is not ErrorCode.PROTOCOL_ERROR])
def test_the_status_sidecar_answers_maps_back_to_its_code(code: ErrorCode) -> None:
    http, grpc = STATUS[code]
    # 500 / INTERNAL is what Triton and MLServer answer when the model fails.
    expected = ErrorCode.HANDLER_ERROR if code is ErrorCode.INTERNAL else code
    assert code_of_http(http) is expected
    if grpc in GRPC_CODES:
        assert code_of_grpc(grpc) is expected


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (422, ErrorCode.INVALID_ARGUMENT),  # MLServer: the body fails validation
        (429, ErrorCode.UNAVAILABLE),  # over the server's queue: try another replica
        (502, ErrorCode.UNAVAILABLE),
        (418, ErrorCode.INVALID_ARGUMENT),
        (507, ErrorCode.INTERNAL),
    ],
)
def test_http_statuses_servers_use_map_to_what_they_mean(status: int, code: ErrorCode) -> None:
    assert code_of_http(status) is code


def test_grpc_codes_are_read_with_or_without_the_enum_prefix() -> None:
    assert code_of_grpc("StatusCode.NOT_FOUND") is ErrorCode.NOT_FOUND
    assert code_of_grpc("UNAVAILABLE") is ErrorCode.UNAVAILABLE
    assert code_of_grpc("StatusCode.UNAUTHENTICATED") is ErrorCode.PERMISSION_DENIED
    assert code_of_grpc("StatusCode.UNIMPLEMENTED") is ErrorCode.INTERNAL


def test_an_upstream_error_carries_the_servers_message_and_status() -> None:
    error = upstream_error("oip-grpc", "StatusCode.NOT_FOUND", "Request for unknown model: 'x'")
    assert (error.code, error.message) == (ErrorCode.NOT_FOUND, "Request for unknown model: 'x'")
    assert error.remote_type == "oip-grpc NOT_FOUND"
    refused = upstream_error("oip-http", None, "Failed to encode")
    assert refused.code is ErrorCode.INVALID_ARGUMENT and refused.remote_type == "oip-http client"


def test_a_long_server_message_is_cut_to_fit_a_header() -> None:
    error = upstream_error("oip-http", "500", "x" * (MAX_MESSAGE + 10))
    assert error.message == "x" * MAX_MESSAGE + "... (10 characters cut)"


def test_request_parameters_drop_the_meshs_own_and_refuse_non_scalars() -> None:
    params = {"affinity": "k", "temperature": 0.5, "n": 3, "stream": False, "tag": "a"}
    assert request_parameters(params) == {"temperature": 0.5, "n": 3, "stream": False, "tag": "a"}
    with pytest.raises(transport.RemoteError) as caught:
        request_parameters({"stop": ["a", "b"]})
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT and "'stop'" in caught.value.message


def test_an_output_of_a_datatype_the_protocol_lacks_is_an_internal_error() -> None:
    with pytest.raises(transport.RemoteError) as caught:
        mesh_output("y", "FP8", None)
    assert caught.value.code is ErrorCode.INTERNAL and "'FP8'" in caught.value.message
    strings = mesh_output("y", "BYTES", np.array(["a", "b"]))
    assert strings.dtype == object and strings.tolist() == ["a", "b"]


def test_a_signature_reads_grpc_json_dimensions_and_refuses_what_is_not_one() -> None:
    grpc_json = {"inputs": [{"name": "x", "datatype": "FP16", "shape": ["-1", "3"]}]}
    assert signature_of(grpc_json) == {"inputs": [["x", "FP16", [-1, 3]]], "outputs": []}
    with pytest.raises(ValueError, match="FP8"):
        signature_of({"outputs": [{"name": "y", "datatype": "FP8", "shape": [1]}]})


@pytest.mark.parametrize(
    ("field", "value"),
    [("protocol", "oip-smtp"), ("model", ""), ("encoding", "xml")],
)
def test_an_upstream_config_refuses_bad_values(field: str, value: str) -> None:
    values = {"url": "http://127.0.0.1:8000", "protocol": "oip-http", "model": "m"}
    with pytest.raises(ValueError, match=field if field != "model" else "model name"):
        UpstreamConfig(**{**values, field: value})  # type: ignore[arg-type]  # bad on purpose


def test_the_model_is_the_service_unless_the_app_model_setting_names_it() -> None:
    base = {"service": "embedder", "app": "grpc://127.0.0.1:8001", "app_protocol": "oip-grpc"}
    limits = Limits()
    upstream = _oip_upstream(Settings(**base), limits)  # type: ignore[arg-type]  # test values
    assert upstream is not None and upstream.config.model == "embedder"
    named = _oip_upstream(Settings(**base, app_model="bge-small"), limits)  # type: ignore[arg-type]  # test values
    assert named is not None and named.config.model == "bge-small"
    mesh = {"service": "embedder", "app": "tcp://127.0.0.1:9000"}
    assert _oip_upstream(Settings(**mesh), limits) is None  # type: ignore[arg-type]  # test values


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request() -> Message:
    metas, _, _ = transport.encode_tensors({"x": np.ones(2, np.float32)}, Limits())
    return Message(1, Header(Kind.REQUEST, service="m", method="infer", tensors=metas), None)


@pytest.mark.parametrize(("protocol", "scheme"), [("oip-http", "http"), ("oip-grpc", "grpc")])
async def test_a_server_that_is_not_there_is_unavailable_and_unready(
    protocol: str, scheme: str, blockbuster: BlockBuster
) -> None:
    url = f"{scheme}://127.0.0.1:{_closed_port()}"
    upstream = OipUpstream(UpstreamConfig(url, protocol, "m"), Limits())  # type: ignore[arg-type]
    try:
        assert not await upstream.probe()
        with pytest.raises(transport.RemoteError) as caught:
            await upstream.handle(_request(), None, None)
        code, said = caught.value.code, str(caught.value)
        del caught  # its traceback holds the client, and with it the channel
        assert code is ErrorCode.UNAVAILABLE, said
    finally:
        # A grpc.aio channel's deallocation takes a lock (not ours to fix): collected here,
        # with nothing left holding it, not in whichever later test the collector runs in.
        blockbuster.deactivate()
        try:
            await upstream.aclose()
            del upstream
            gc.collect()
        finally:
            blockbuster.activate()


async def test_answers_are_asked_for_uncompressed() -> None:
    # aiohttp asks for gzip unless told otherwise, and Triton then deflates every answer
    # (a 64 MiB output cost the sidecar about a second to inflate). A recording server
    # stands in for the model server: what matters is the request the adapter sends.
    seen: list[str] = []

    async def metadata(request: web.Request) -> web.Response:
        return web.json_response({"name": "recorder", "extensions": ["binary_tensor_data"]})

    async def infer(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Accept-Encoding", ""))
        outputs = [{"name": "y", "datatype": "FP32", "shape": [2], "data": [1.0, 1.0]}]
        return web.json_response({"model_name": "m", "outputs": outputs})

    app = web.Application()
    app.router.add_get("/v2", metadata)
    app.router.add_post("/v2/models/m/infer", infer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    upstream = OipUpstream(UpstreamConfig(f"http://127.0.0.1:{port}", "oip-http", "m"), Limits())
    try:
        await upstream.handle(_request(), None, None)
    finally:
        await upstream.aclose()
        await runner.cleanup()
    assert seen == ["identity"]

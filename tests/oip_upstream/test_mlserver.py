"""A sidecar fronting a real MLServer with a small custom model, called through the mesh
over OIP HTTP (JSON: MLServer has no binary tensor extension) and gRPC (raw contents)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from sidecar import DeadlineExceeded, MeshClient, RemoteError
from transport import ErrorCode

from ..e2e.conftest import Sidecar
from .conftest import PROTOCOLS, SERVICE, SidecarGroup, front_both
from .helpers import every_datatype, is_deadline, readyz, same, signature
from .servers import ModelServer

pytestmark = [pytest.mark.model_servers, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def fronts(mlserver: ModelServer, module_sidecars: SidecarGroup) -> dict[str, Sidecar]:
    """One sidecar fronting the module's MLServer over each protocol."""
    return front_both(mlserver, module_sidecars)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_every_datatype_round_trips_through_mlserver(
    fronts: dict[str, Sidecar], module_sidecars: SidecarGroup, protocol: str
) -> None:
    inputs = every_datatype(utf8_only=protocol == "http")  # JSON strings are UTF-8
    async with MeshClient(fronts[protocol].mesh, shm_dir=module_sidecars.shm_dir) as client:
        out = await client.infer(SERVICE[protocol], inputs, timeout=30)
        assert sorted(out) == sorted(f"out_{name}" for name in inputs)
        for name, array in inputs.items():
            assert same(out[f"out_{name}"], array), name
        del out


async def test_the_http_front_falls_back_to_json_for_mlserver(
    fronts: dict[str, Sidecar],
) -> None:
    assert "encoding=json" in await asyncio.to_thread(fronts["http"].log.read_text)
    raw = {"bytes": np.array([[b"\xff\xfe"]], dtype=object)}
    async with MeshClient(fronts["http"].mesh) as client:
        with pytest.raises(RemoteError) as caught:
            await client.infer("echo", raw, timeout=10)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert "cannot be sent as JSON" in caught.value.message


async def test_binary_tensors_forced_on_mlserver_fail_with_its_error(
    mlserver: ModelServer, sidecars: SidecarGroup
) -> None:
    front = await asyncio.to_thread(
        sidecars.start, "echo", mlserver.http_url, "oip-http", "--app-encoding", "binary"
    )
    async with MeshClient(front.mesh) as client:
        with pytest.raises(RemoteError) as caught:
            await client.infer("echo", {"f32": np.ones((1, 2), np.float32)}, timeout=10)
    # MLServer cannot parse the body and fails inside its validation error handler: a 500
    # with a traceback, indistinguishable from a model failing (hence detection by metadata).
    assert caught.value.code is ErrorCode.HANDLER_ERROR, caught.value
    assert caught.value.remote_type == "oip-http 500"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_the_models_signature_comes_from_mlservers_metadata(
    fronts: dict[str, Sidecar], protocol: str
) -> None:
    params = await signature(fronts[protocol], SERVICE[protocol])
    assert params == {
        "inputs": [["f32", "FP32", [-1, -1]]],
        "outputs": [["out_f32", "FP32", [-1, -1]]],
    }


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_bad_shape_is_invalid_argument_with_the_models_message(
    fronts: dict[str, Sidecar], protocol: str
) -> None:
    async with MeshClient(fronts[protocol].mesh) as client:
        with pytest.raises(RemoteError) as caught:
            await client.infer(SERVICE[protocol], {"f32": np.zeros((2, 2, 2), np.float32)})
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert caught.value.message == "input 'f32' has rank 3, this model takes at most 2"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_unknown_model_is_not_found_and_the_sidecar_is_not_ready(
    mlserver: ModelServer, sidecars: SidecarGroup, protocol: str
) -> None:
    app = mlserver.http_url if protocol == "http" else mlserver.grpc_url
    front = await asyncio.to_thread(
        sidecars.start, "echo", app, f"oip-{protocol}", "--app-model", "nosuch", ready=False
    )
    async with MeshClient(front.mesh) as client:
        with pytest.raises(RemoteError) as caught:
            await client.infer("echo", {"f32": np.zeros((1, 1), np.float32)}, timeout=10)
    assert caught.value.code is ErrorCode.NOT_FOUND
    assert caught.value.message.startswith("Model nosuch ")
    assert caught.value.message.endswith(" not found")
    status, reason = await asyncio.to_thread(front.admin, "/readyz")
    assert status == 503 and "does not answer its health probe" in reason


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_deadline_cuts_a_slow_model_short(
    fronts: dict[str, Sidecar], protocol: str
) -> None:
    delay = {"delay_s": np.array([1.0], np.float32)}
    async with MeshClient(fronts[protocol].mesh) as client:
        with pytest.raises((DeadlineExceeded, RemoteError)) as caught:
            await client.infer(SERVICE[protocol], delay, timeout=0.3)
        assert is_deadline(caught.value), caught.value
        out = await client.infer(SERVICE[protocol], {"i8": np.ones((1, 1), np.int8)}, timeout=10)
        assert out["out_i8"].tolist() == [[1]]


async def test_the_sidecar_follows_mlservers_health(
    mlserver: ModelServer, fronts: dict[str, Sidecar]
) -> None:
    # Stops the module's server and starts it again on the same ports, as it was.
    x = {"i32": np.ones((1, 2), np.int32)}
    await asyncio.to_thread(mlserver.stop)
    for protocol, front in fronts.items():
        await readyz(front, 503)
        async with MeshClient(front.mesh) as client:
            with pytest.raises(RemoteError) as caught:
                await client.infer(SERVICE[protocol], x, timeout=10)
        assert caught.value.code is ErrorCode.UNAVAILABLE, caught.value
    await asyncio.to_thread(mlserver.start)
    for protocol, front in fronts.items():
        await readyz(front, 200)
        async with MeshClient(front.mesh) as client:
            out = await client.infer(SERVICE[protocol], x, timeout=10)
            assert same(out["out_i32"], x["i32"])

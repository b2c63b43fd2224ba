"""A sidecar fronting a real Triton Inference Server (PyTriton's, on the CPU), called
through the mesh over OIP HTTP (binary tensor extension) and gRPC."""

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
def fronts(triton: ModelServer, module_sidecars: SidecarGroup) -> dict[str, Sidecar]:
    """One sidecar fronting the module's Triton over each protocol."""
    return front_both(triton, module_sidecars)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_every_datatype_round_trips_through_triton(
    fronts: dict[str, Sidecar], module_sidecars: SidecarGroup, protocol: str
) -> None:
    inputs = every_datatype()
    async with MeshClient(fronts[protocol].mesh, shm_dir=module_sidecars.shm_dir) as client:
        out = await client.infer(SERVICE[protocol], inputs, timeout=30)
        assert sorted(out) == sorted(f"out_{name}" for name in inputs)
        for name, array in inputs.items():
            assert same(out[f"out_{name}"], array), name
        del out


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_large_tensor_goes_by_shared_memory_to_the_sidecar_and_back(
    fronts: dict[str, Sidecar], module_sidecars: SidecarGroup, protocol: str
) -> None:
    x = np.arange(1 << 21, dtype=np.float32).reshape(1024, -1)  # 8 MiB
    async with MeshClient(fronts[protocol].mesh, shm_dir=module_sidecars.shm_dir) as client:
        out = await client.infer(SERVICE[protocol], {"f32": x}, timeout=60)
        assert same(out["out_f32"], x)
        del out
        stats = client.shm_stats()
        assert stats is not None and stats.bytes_by_reference >= x.nbytes


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_the_models_signature_comes_from_tritons_metadata(
    fronts: dict[str, Sidecar], protocol: str
) -> None:
    params = await signature(fronts[protocol], SERVICE[protocol])
    inputs, outputs = params["inputs"], params["outputs"]
    assert isinstance(inputs, list) and isinstance(outputs, list)
    assert ["f32", "FP32", [-1, -1]] in inputs and ["delay_s", "FP32", [1]] in inputs
    assert ["out_bytes", "BYTES", [-1, -1]] in outputs


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_bad_shape_is_invalid_argument_with_tritons_message(
    fronts: dict[str, Sidecar], protocol: str
) -> None:
    async with MeshClient(fronts[protocol].mesh) as client:
        with pytest.raises(RemoteError) as caught:
            await client.infer(SERVICE[protocol], {"f32": np.zeros((2, 2, 2), np.float32)})
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert "unexpected shape for input 'f32' for model 'echo'" in caught.value.message
    assert caught.value.remote_type == f"oip-{protocol} " + (
        "400" if protocol == "http" else "INVALID_ARGUMENT"
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_unknown_model_is_not_found_and_the_sidecar_is_not_ready(
    triton: ModelServer, sidecars: SidecarGroup, protocol: str
) -> None:
    app = triton.http_url if protocol == "http" else triton.grpc_url
    front = await asyncio.to_thread(
        sidecars.start, "echo", app, f"oip-{protocol}", "--app-model", "nosuch", ready=False
    )
    async with MeshClient(front.mesh) as client:
        with pytest.raises(RemoteError) as caught:
            await client.infer("echo", {"f32": np.zeros((1, 1), np.float32)}, timeout=10)
    assert caught.value.code is ErrorCode.NOT_FOUND
    assert caught.value.message == "Request for unknown model: 'nosuch' is not found"
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
        # The sidecar is still there for the next request (once the model has slept).
        out = await client.infer(SERVICE[protocol], {"i8": np.ones((1, 1), np.int8)}, timeout=10)
        assert out["out_i8"].tolist() == [[1]]


async def test_triton_gets_binary_tensors_unless_json_is_set(
    triton: ModelServer, fronts: dict[str, Sidecar], sidecars: SidecarGroup
) -> None:
    assert "encoding=binary" in await asyncio.to_thread(fronts["http"].log.read_text)
    front = await asyncio.to_thread(
        sidecars.start, "echo", triton.http_url, "oip-http", "--app-encoding", "json"
    )
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    async with MeshClient(front.mesh) as client:
        out = await client.infer("echo", {"f32": x}, timeout=10)
        assert same(out["out_f32"], x)
        with pytest.raises(RemoteError) as caught:
            await client.infer("echo", {"f16": x.astype(np.float16)}, timeout=10)
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    assert "receiving FP16 data via JSON is not supported" in caught.value.message
    assert "encoding=json" not in await asyncio.to_thread(front.log.read_text)


async def test_the_sidecar_follows_tritons_health(
    triton: ModelServer, fronts: dict[str, Sidecar]
) -> None:
    # Stops the module's server and starts it again on the same ports, as it was.
    x = {"i32": np.ones((1, 2), np.int32)}
    await asyncio.to_thread(triton.stop)
    for protocol, front in fronts.items():
        await readyz(front, 503)
        async with MeshClient(front.mesh) as client:
            with pytest.raises(RemoteError) as caught:
                await client.infer(SERVICE[protocol], x, timeout=10)
        assert caught.value.code is ErrorCode.UNAVAILABLE, caught.value
    await asyncio.to_thread(triton.start)
    for protocol, front in fronts.items():
        await readyz(front, 200)
        async with MeshClient(front.mesh) as client:
            out = await client.infer(SERVICE[protocol], x, timeout=10)
            assert same(out["out_i32"], x["i32"])

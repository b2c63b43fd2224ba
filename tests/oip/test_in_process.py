"""The daemon and a replica in this process, on the test's event loop, so that the
blockbuster fixture fails any blocking call the OIP front door makes on the loop
(shared-memory registration, large bodies, output copies into a region)."""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http.aio as aioclient
import tritonclient.utils.shared_memory as shm
from blockbuster import BlockBuster

from sidecar import Service, TensorSpec
from sidecar._config import load_run_config
from sidecar._daemon import Daemon

pytestmark = pytest.mark.timeout(60)


def negate(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"y": -inputs["x"]}


@pytest.fixture
async def front_door(tmp_path: Path, blockbuster: BlockBuster) -> AsyncIterator[str]:
    """A replica serving "negate" and a sidecar fronting it; the sidecar's local HTTP."""
    spec = [TensorSpec("x", "FP32", (-1,))], [TensorSpec("y", "FP32", (-1,))]
    async with Service(negate, service="negate", inputs=spec[0], outputs=spec[1]) as replica:
        static = tmp_path / "mesh.yaml"
        await asyncio.to_thread(static.write_text, "services: {}\n")
        argv = ["--service", "negate", "--app", f"tcp://{replica.address}",
                "--discovery", f"static://{static}", "--mesh-addr", "127.0.0.1:0",
                "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0",
                "--admin-addr", "127.0.0.1:0", "--app-health-interval", "0.05"]  # fmt: skip
        config = await asyncio.to_thread(load_run_config, argv, {})
        daemon = Daemon(config, {})
        try:
            await daemon.start()
            async with asyncio.timeout(10):
                # Readiness is a property the app probe (every 50 ms) sets: polled.
                while not daemon.ready:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            yield daemon.addresses["http"]
        finally:
            # grpc.aio joins its poller thread when its last server stops: not ours to fix.
            blockbuster.deactivate()
            try:
                await daemon.aclose()
                gc.collect()
            finally:
                blockbuster.activate()


async def test_large_tensors_and_shared_memory_never_block_the_loop(front_door: str) -> None:
    x = np.random.default_rng(3).standard_normal(2 << 20).astype(np.float32)  # 8 MiB
    key = f"/oip-inproc-{uuid.uuid4().hex[:8]}"
    handle = await asyncio.to_thread(shm.create_shared_memory_region, "io", key, 2 * x.nbytes)
    try:
        await asyncio.to_thread(shm.set_shared_memory_region, handle, [x])
        async with aioclient.InferenceServerClient(url=front_door) as client:
            assert (await client.get_model_metadata("negate"))["outputs"][0]["name"] == "y"
            small = aioclient.InferInput("x", [1024], "FP32")  # aiohttp's client warns > 1 MiB
            small.set_data_from_numpy(x[:1024])
            result = await client.infer("negate", [small])
            np.testing.assert_array_equal(result.as_numpy("y"), -x[:1024])
            await client.register_system_shared_memory("io", key, 2 * x.nbytes)
            tensor = aioclient.InferInput("x", [x.size], "FP32")
            tensor.set_shared_memory("io", x.nbytes)
            output = aioclient.InferRequestedOutput("y")
            output.set_shared_memory("io", x.nbytes, offset=x.nbytes)
            await client.infer("negate", [tensor], outputs=[output])
            got = await asyncio.to_thread(
                shm.get_contents_as_numpy, handle, np.float32, [x.size], x.nbytes
            )
            np.testing.assert_array_equal(got, -x)
            await client.unregister_system_shared_memory()
            stats = await client.get_inference_statistics("negate")
            assert stats["model_stats"][0]["inference_count"] == 2
    finally:
        await asyncio.to_thread(shm.destroy_shared_memory_region, handle)

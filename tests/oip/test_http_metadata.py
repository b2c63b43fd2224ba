"""Health, metadata and statistics as tritonclient.http asks for them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from .conftest import Mesh

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def client(mesh: Mesh) -> Iterator[Any]:
    with httpclient.InferenceServerClient(url=mesh.http) as c:
        yield c


def test_health_and_server_metadata(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "arrowmesh" and meta["version"]
    assert {"binary_tensor_data", "system_shared_memory", "statistics"} <= set(meta["extensions"])
    assert "cuda_shared_memory" not in meta["extensions"]


def test_model_metadata_is_the_replicas_declared_signature(client: Any) -> None:
    assert client.is_model_ready("simple")
    meta = client.get_model_metadata("simple")
    assert meta["name"] == "simple" and meta["versions"] == ["1"]
    assert meta["inputs"] == [
        {"name": "INPUT0", "datatype": "INT32", "shape": [-1, 16]},
        {"name": "INPUT1", "datatype": "INT32", "shape": [-1, 16]},
    ]
    assert [o["name"] for o in meta["outputs"]] == ["OUTPUT0", "OUTPUT1"]
    config = client.get_model_config("simple")
    assert config["max_batch_size"] == 0
    assert config["input"][0] == {"name": "INPUT0", "data_type": "TYPE_INT32", "dims": [-1, 16]}


def test_statistics_count_successes_and_failures(client: Any) -> None:
    def stats() -> dict[str, Any]:
        found: dict[str, Any] = client.get_inference_statistics("simple")["model_stats"][0]
        return found

    before = stats()
    tensor = httpclient.InferInput("x", [4], "FP32")
    tensor.set_data_from_numpy(np.arange(4, dtype=np.float32))
    for _ in range(3):
        client.infer("simple", [tensor])
    with pytest.raises(InferenceServerException):
        client.infer("simple", [tensor], outputs=[httpclient.InferRequestedOutput("absent")])
    after = stats()
    assert after["name"] == "simple" and after["version"] == "1"
    assert after["inference_count"] == before["inference_count"] + 3
    assert after["execution_count"] == before["execution_count"] + 3
    success, fail = after["inference_stats"]["success"], after["inference_stats"]["fail"]
    assert success["count"] == before["inference_stats"]["success"]["count"] + 3
    assert success["ns"] > before["inference_stats"]["success"]["ns"]
    assert fail["count"] == before["inference_stats"]["fail"]["count"] + 1
    assert after["last_inference"] >= before["last_inference"] > 0 or before["last_inference"] == 0
    for key in ("queue", "compute_input", "compute_infer", "compute_output", "cache_hit"):
        assert set(after["inference_stats"][key]) == {"count", "ns"}
    assert after["batch_stats"] == []
    everything = client.get_inference_statistics()["model_stats"]
    assert "simple" in [s["name"] for s in everything]
    versioned = client.get_inference_statistics("simple", "1")["model_stats"][0]
    assert versioned["inference_count"] == after["inference_count"]

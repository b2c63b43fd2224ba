"""Proxyless mutual TLS: `serve(tls=..., allow=...)` replicas and `MeshClient(tls=...)`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from sidecar import InvalidInput, MeshClient, RemoteError, Service, Unavailable
from tests.pki import TRUST_DOMAIN, Pki
from transport import ErrorCode, TlsFiles

pytestmark = pytest.mark.timeout(60)

Arrays = dict[str, npt.NDArray[Any]]


async def double(inputs: Arrays) -> Arrays:
    return {"y": inputs["x"] * 2}


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, TlsFiles]:
    pki = Pki(tmp_path)
    return {name: pki.issue(name) for name in ("model", "pipeline", "scraper")}


@pytest.fixture
async def replica(certs: dict[str, TlsFiles], tmp_path: Path) -> AsyncIterator[str]:
    """A TLS replica that lets only `pipeline` call; the static discovery URI listing it."""
    service = Service(
        double,
        service="model",
        shm_dir="",
        tls=certs["model"],
        trust_domain=TRUST_DOMAIN,
        allow=["pipeline"],
    )
    async with service:
        port = service.address.rsplit(":", 1)[1]
        path = tmp_path / "mesh.yaml"
        text = f"services:\n  model:\n    - {{id: m1, address: 127.0.0.1, port: {port}}}\n"
        await asyncio.to_thread(path.write_text, text)
        yield f"static://{path}"


async def test_an_allowed_proxyless_client_is_served_over_mutual_tls(
    replica: str, certs: dict[str, TlsFiles]
) -> None:
    client = MeshClient(discovery=replica, tls=certs["pipeline"], trust_domain=TRUST_DOMAIN)
    async with client:
        out = await client.infer("model", {"x": np.arange(4)}, timeout=10)
    np.testing.assert_array_equal(out["y"], np.arange(4) * 2)


async def test_a_caller_not_allowed_is_refused_with_permission_denied(
    replica: str, certs: dict[str, TlsFiles]
) -> None:
    client = MeshClient(discovery=replica, tls=certs["scraper"], trust_domain=TRUST_DOMAIN)
    async with client:
        with pytest.raises(RemoteError) as refused:
            await client.infer("model", {"x": np.arange(4)}, timeout=10)
    assert refused.value.code is ErrorCode.PERMISSION_DENIED
    assert "scraper may not call model" in str(refused.value)


async def test_a_plaintext_client_cannot_reach_a_tls_replica(replica: str) -> None:
    async with MeshClient(discovery=replica, shm_dir="") as client:
        with pytest.raises(Unavailable):
            await client.infer("model", {"x": np.arange(4)}, timeout=10)


def test_tls_is_for_proxyless_clients_and_allow_needs_tls(certs: dict[str, TlsFiles]) -> None:
    with pytest.raises(InvalidInput, match="proxyless"):
        MeshClient("127.0.0.1:7700", tls=certs["pipeline"])
    with pytest.raises(ValueError, match="allow= needs tls="):
        Service(double, service="model", allow=["pipeline"])

"""Static registry: the file format, reload on change, last good content on a bad edit."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from discovery import Endpoint, Outage, RecordError, Snapshot, WatchEvent
from discovery._static import StaticRegistry, parse_static

GOOD = """
services:
  embedder:
    - {id: embedder-2, address: 10.99.0.6, port: 7700}
    - id: embedder-1
      address: 10.99.0.5
      port: 7700
      protocol: oip-http
      meta: {shm_domain: host-a, zone: a, weight: 2, gpu: none}
  ranker: []
"""


def test_the_design_format_parses_into_sorted_endpoints() -> None:
    services = parse_static(GOOD.encode(), "mesh.yaml")
    first = services["embedder"][0]
    assert [e.id for e in services["embedder"]] == ["embedder-1", "embedder-2"]
    assert (first.protocol, first.shm_domain, first.zone, first.weight) == (
        "oip-http", "host-a", "a", 2
    )  # fmt: skip
    assert first.extra == (("gpu", "none"),) and services["ranker"] == ()


def test_json_is_accepted_too() -> None:
    text = b'{"services": {"s": [{"id": "s-1", "address": "127.0.0.1", "port": 9}]}}'
    assert parse_static(text, "mesh.json")["s"][0].port == 9


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("services: [", "not valid YAML"),
        ("- 1", "'services' mapping"),
        ("services: {s: {id: x}}", "must be a list"),
        ("services: {s: [{id: x, address: h}]}", "missing \\['port'\\]"),
        ("services: {s: [{id: x, address: h, port: '80'}]}", "port must be an integer"),
        ("services: {s: [{id: x, address: h, port: 1, colour: red}]}", "unknown keys"),
        ("services: {s: [{id: x, address: h, port: 1, meta: {weight: [1]}}]}", "string or a"),
        ("services: {s: [{id: x, address: h, port: 1}, {id: x, address: h, port: 2}]}", "twice"),
        ("services: {s: [{id: x, address: h, port: 1, protocol: ftp}]}", "services.s\\[0\\]"),
    ],
)
def test_bad_files_raise_record_errors_that_say_where(text: str, says: str) -> None:
    with pytest.raises(RecordError, match=says):
        parse_static(text.encode(), "mesh.yaml")


async def _write(path: Path, text: str) -> None:
    """Replace the file atomically, as editors and ConfigMap updates do."""

    def write() -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    await asyncio.to_thread(write)


async def _next(events: AsyncIterator[WatchEvent]) -> WatchEvent:
    async with asyncio.timeout(5.0):
        return await anext(events)


async def test_reload_on_change_and_last_good_content_on_a_bad_edit(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    await _write(path, GOOD)
    async with StaticRegistry(str(path), poll_interval=0.05) as registry:
        events = registry.watch("embedder")
        first = await _next(events)
        assert isinstance(first, Snapshot) and len(first.endpoints) == 2

        await _write(path, "services: {embedder: [{id: e-9, address: 10.99.0.9, port: 1}]}")
        second = await _next(events)
        assert isinstance(second, Snapshot) and [e.id for e in second.endpoints] == ["e-9"]

        await _write(path, "services: {embedder: [{id: e-9, address: ")
        broken = await _next(events)
        assert isinstance(broken, Outage) and "not valid YAML" in broken.reason

        await _write(path, GOOD)
        healed = await _next(events)
        assert isinstance(healed, Snapshot) and len(healed.endpoints) == 2
        await events.aclose()  # type: ignore[attr-defined]  # an async generator


async def test_a_missing_file_is_an_outage_until_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "later.yaml"
    async with StaticRegistry(str(path), poll_interval=0.05) as registry:
        events = registry.watch("embedder")
        missing = await _next(events)
        assert isinstance(missing, Outage) and "No such file" in missing.reason
        await _write(path, GOOD)
        assert isinstance(await _next(events), Snapshot)
        await events.aclose()  # type: ignore[attr-defined]


async def test_registered_endpoints_follow_health(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    await _write(path, "services: {}")
    mine = Endpoint("embedder", "local-1", "127.0.0.1", 7700)
    async with StaticRegistry(str(path), poll_interval=5.0) as registry:
        events = registry.watch("embedder")
        assert await _next(events) == Snapshot(())
        await registry.register(mine)  # unhealthy until said otherwise: nothing changes
        await registry.set_health("local-1", True)
        assert await _next(events) == Snapshot((mine,))
        await registry.set_health("local-1", False)
        assert await _next(events) == Snapshot(())
        await registry.set_health("local-1", True)
        assert await _next(events) == Snapshot((mine,))
        await registry.deregister("local-1")
        assert await _next(events) == Snapshot(())
        await events.aclose()  # type: ignore[attr-defined]

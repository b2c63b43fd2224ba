"""The Consul backend against the emulator (or a real agent's API, via the same client)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from discovery import (
    ConsulUri,
    Endpoint,
    Outage,
    RegistryRejected,
    RegistryUnavailable,
    Snapshot,
)
from discovery._cluster import Cluster
from discovery._consul import ConsulRegistry
from tests.conftest import child_env
from tests.consul_emulator import ConsulEmulator

FAST = {"reap_interval": 0.5, "min_deregister_after": 1.0, "wait_jitter": False}


@pytest.fixture
async def emulator() -> AsyncIterator[ConsulEmulator]:
    async with ConsulEmulator(**FAST) as emu:  # type: ignore[arg-type]  # literal knobs
        yield emu


def _uri(emu: ConsulEmulator, token: str = "") -> ConsulUri:
    return ConsulUri(emu.host, emu.port, token=token)


def _endpoint(n: int, service: str = "embedder") -> Endpoint:
    return Endpoint(service, f"{service}-{n}", "127.0.0.1", 7700 + n, zone="a", capacity=4)


async def _until(cluster: Cluster, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await cluster.wait_changed(cluster.version)


async def _eventually(predicate: Callable[[], bool], timeout: float) -> None:
    """Poll state that lives elsewhere (the agent's), with a deadline."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110  # no event to wait on: another process's state
            await asyncio.sleep(0.05)


def _ids(cluster: Cluster) -> list[str]:
    return [e.id for e in cluster.endpoints]


async def test_register_pass_fail_deregister(emulator: ConsulEmulator) -> None:
    async with (
        ConsulRegistry(_uri(emulator), wait=2.0) as registry,
        Cluster("embedder", registry) as cluster,
    ):
        await cluster.wait_ready()
        await registry.register(_endpoint(1))
        assert "embedder-1" in emulator.services()
        assert _ids(cluster) == []  # the TTL check starts critical
        await registry.set_health("embedder-1", True)
        await _until(cluster, lambda: _ids(cluster) == ["embedder-1"], timeout=2.0)
        assert cluster.endpoints[0] == _endpoint(1)  # meta survived the trip
        await registry.set_health("embedder-1", False, "app not ready")
        await _until(cluster, lambda: _ids(cluster) == [], timeout=2.0)
        await registry.deregister("embedder-1")
        assert "embedder-1" not in emulator.services()
        await registry.deregister("embedder-1")  # unknown: not an error


async def test_aclose_deregisters_everything(emulator: ConsulEmulator) -> None:
    async with ConsulRegistry(_uri(emulator)) as registry:
        for n in (1, 2):
            await registry.register(_endpoint(n))
    assert emulator.services() == {}


async def test_registry_outage_keeps_the_last_good_set(emulator: ConsulEmulator) -> None:
    async with (
        ConsulRegistry(_uri(emulator), wait=2.0) as registry,
        Cluster("embedder", registry) as cluster,
    ):
        await registry.register(_endpoint(1))
        await registry.set_health("embedder-1", True)
        await _until(cluster, lambda: _ids(cluster) == ["embedder-1"])
        await emulator.stop()
        await _until(cluster, lambda: cluster.stale)
        assert _ids(cluster) == ["embedder-1"]
        await emulator.restart(forget=False)
        await _until(cluster, lambda: not cluster.stale, timeout=10.0)
        assert _ids(cluster) == ["embedder-1"]


async def test_agent_restarted_empty_gets_us_back_within_seconds(emulator: ConsulEmulator) -> None:
    async with (
        ConsulRegistry(_uri(emulator), wait=2.0, keepalive=0.3) as registry,
        Cluster("embedder", registry) as cluster,
    ):
        await registry.register(_endpoint(1))
        await registry.set_health("embedder-1", True)
        await _until(cluster, lambda: _ids(cluster) == ["embedder-1"])
        await emulator.restart(forget=True)  # a -dev agent: registrations and index gone
        assert emulator.services() == {}
        # Back within a few seconds, and passing again (the index went backwards too).
        await _eventually(lambda: "embedder-1" in emulator.services(), timeout=5.0)
        await _until(cluster, lambda: _ids(cluster) == ["embedder-1"] and not cluster.stale)


async def test_a_watcher_reads_afresh_after_an_agent_restart_resets_the_index(
    emulator: ConsulEmulator,
) -> None:
    # Found by the soak: after the agent restarted (its index starting over, below ours), the
    # watcher's next blocking query waited out its whole `wait` on the old index, serving a
    # stale set (dead endpoints) meanwhile. `wait` here is far longer than the deadline.
    async with (
        ConsulRegistry(_uri(emulator), wait=60.0, keepalive=0.3) as replicas,
        ConsulRegistry(_uri(emulator), wait=60.0) as watcher,
        Cluster("embedder", watcher) as cluster,
    ):
        for n in range(1, 6):  # push the index up
            await replicas.register(_endpoint(n))
            await replicas.set_health(f"embedder-{n}", True)
        await _until(cluster, lambda: len(_ids(cluster)) == 5)
        for n in range(2, 6):
            await replicas.deregister(f"embedder-{n}")
        for _ in range(30):  # churn: the old agent's index ends far above a fresh one's
            await replicas.register(_endpoint(9))
            await replicas.deregister("embedder-9")
        await _until(cluster, lambda: _ids(cluster) == ["embedder-1"])
        await emulator.stop()  # as a killed agent: the watch fails and reports an outage
        await _until(cluster, lambda: cluster.stale)
        await emulator.restart(forget=True)  # back empty: registrations and index gone
        await _until(cluster, lambda: _ids(cluster) == ["embedder-1"] and not cluster.stale, 8.0)


async def test_an_agent_restarted_empty_does_not_empty_the_set_while_services_re_register(
    emulator: ConsulEmulator,
) -> None:
    # Found by the CI soak: a restarted agent lists nothing until each replica's keeper
    # registers it again (up to a keepalive later); meanwhile other writes move the index, so
    # "one more query" was not enough and callers dropped every endpoint for ~2 s.
    async with (
        ConsulRegistry(_uri(emulator), wait=60.0, keepalive=1.5) as replicas,
        ConsulRegistry(_uri(emulator), wait=2.0, keepalive=0.2) as others,
        ConsulRegistry(_uri(emulator), wait=60.0, ttl=10.0) as watcher,
        Cluster("embedder", watcher) as cluster,
    ):
        await replicas.register(_endpoint(1))
        await replicas.set_health("embedder-1", True)
        await _until(cluster, lambda: _ids(cluster) == ["embedder-1"])
        seen: list[list[str]] = []

        async def record() -> None:
            while True:
                await cluster.wait_changed(cluster.version)
                seen.append(_ids(cluster))

        recorder = asyncio.create_task(record())
        try:
            await emulator.restart(forget=True)
            # Another service comes back first and moves the index while ours is still gone.
            await others.register(_endpoint(1, "reranker"))
            await others.set_health("reranker-1", True)
            await _eventually(lambda: "embedder-1" in emulator.services(), timeout=5.0)
            await _until(cluster, lambda: not cluster.stale, timeout=5.0)
        finally:
            recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recorder
        assert _ids(cluster) == ["embedder-1"]
        assert [] not in seen, seen


async def test_a_service_gone_for_good_is_dropped_once_the_grace_ends(
    emulator: ConsulEmulator,
) -> None:
    # The other side of the grace: the replica died during the outage, nothing re-registers,
    # so `ttl` after the agent answers again its empty answer is believed.
    async with (
        ConsulRegistry(_uri(emulator), wait=60.0, ttl=1.0) as watcher,
        Cluster("embedder", watcher) as cluster,
    ):
        replicas = ConsulRegistry(_uri(emulator), wait=60.0, keepalive=0.3)
        async with replicas:
            await replicas.register(_endpoint(1))
            await replicas.set_health("embedder-1", True)
            await _until(cluster, lambda: _ids(cluster) == ["embedder-1"])
            await emulator.stop()
            await _until(cluster, lambda: cluster.stale)
        # (its deregistration found no agent)
        await emulator.restart(forget=True)
        await _until(cluster, lambda: _ids(cluster) == [] and not cluster.stale, timeout=5.0)


async def test_a_missed_ttl_takes_the_endpoint_out_of_the_passing_set(
    emulator: ConsulEmulator,
) -> None:
    # keepalive far beyond the TTL: a sidecar that hangs and stops passing its check.
    async with (
        ConsulRegistry(_uri(emulator), ttl=1.0, keepalive=60.0, wait=2.0) as registry,
        Cluster("embedder", registry) as cluster,
    ):
        await registry.register(_endpoint(1))
        await registry.set_health("embedder-1", True)
        await _until(cluster, lambda: _ids(cluster) == ["embedder-1"])
        await _until(cluster, lambda: _ids(cluster) == [], timeout=4.0)
        assert emulator.checks()["service:embedder-1"]["Status"] == "critical"


REGISTER_AND_HANG = """
import asyncio, sys
from discovery import ConsulUri, Endpoint
from discovery._consul import ConsulRegistry

async def main():
    registry = ConsulRegistry(ConsulUri("127.0.0.1", {port}), ttl=1.0, deregister_after=1.0)
    await registry.__aenter__()
    await registry.register(Endpoint("doomed", "doomed-1", "127.0.0.1", 9))
    await registry.set_health("doomed-1", True)
    print("registered", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_killed_process_is_reaped_after_deregister_critical_after(
    emulator: ConsulEmulator, tmp_path: Path
) -> None:
    script = textwrap.dedent(REGISTER_AND_HANG).format(port=emulator.port)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, env=child_env(), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30.0):
            assert await proc.stdout.readline() == b"registered\n"
        assert "doomed-1" in emulator.services()
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    # TTL 1 s, then critical for the minimum of 1 s (fast knob), then a 0.5 s reap tick.
    await _eventually(lambda: "doomed-1" not in emulator.services(), timeout=10.0)


async def test_acl_token_from_the_uri_is_used_and_a_bad_one_is_refused() -> None:
    async with ConsulEmulator(acl_tokens=frozenset({"s3cret"}), **FAST) as emu:  # type: ignore[arg-type]
        async with ConsulRegistry(_uri(emu, token="s3cret")) as registry:
            await registry.register(_endpoint(1))
            assert "embedder-1" in emu.services()
        with pytest.raises(RegistryRejected, match="ACL not found"):
            async with ConsulRegistry(_uri(emu, token="wrong")) as registry:
                await registry.register(_endpoint(2))


async def test_an_unreachable_agent_is_registry_unavailable() -> None:
    async with ConsulRegistry(ConsulUri("127.0.0.1", 1)) as registry:
        with pytest.raises(RegistryUnavailable, match="unreachable"):
            await registry.register(_endpoint(1))


def _broken_agent(answers: list[web.Response]) -> web.Application:
    """A stand-in for an agent gone wrong: serves `answers` in turn, then the last forever."""

    async def health(request: web.Request) -> web.StreamResponse:
        return answers.pop(0) if len(answers) > 1 else answers[0]

    app = web.Application()
    app.router.add_get("/v1/health/service/{name}", health)
    return app


async def test_malformed_answers_are_outages_then_the_watch_recovers() -> None:
    good_body = json.dumps([{
        "Node": {"Node": "n1", "Address": "127.0.0.1"},
        "Service": {"ID": "e-1", "Service": "embedder", "Address": "", "Port": 7701, "Meta": {}},
        "Checks": [],
    }])  # fmt: skip
    answers = [
        web.Response(text="not json", headers={"X-Consul-Index": "3"}),
        web.Response(text='{"a": 1}', headers={"X-Consul-Index": "3"}),
        web.Response(text="[]"),  # no index header
        web.Response(text="No cluster leader", status=500),
        web.Response(text=good_body, headers={"X-Consul-Index": "4"}),
    ]
    runner = web.AppRunner(_broken_agent(answers))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with ConsulRegistry(ConsulUri("127.0.0.1", port), wait=1.0) as registry:
            events = registry.watch("embedder")
            async with asyncio.timeout(20.0):
                first = await anext(events)
                assert isinstance(first, Outage)
                second = await anext(events)
            assert isinstance(second, Snapshot)
            assert [e.id for e in second.endpoints] == ["e-1"]
            await events.aclose()  # type: ignore[attr-defined]  # an async generator
    finally:
        await runner.cleanup()


async def test_health_answers_follow_the_real_client_path(emulator: ConsulEmulator) -> None:
    """Raw HTTP cross-check: what the backend registered is what the agent API shows."""
    async with ConsulRegistry(_uri(emulator)) as registry:
        await registry.register(_endpoint(3))
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{emulator.address}/v1/agent/services") as response,
        ):
            services = await response.json()
        entry = services["embedder-3"]
        assert entry["Meta"] == {"protocol": "mesh", "zone": "a", "capacity": "4"}
        assert entry["Weights"] == {"Passing": 1, "Warning": 1}
        assert sorted(entry["Tags"]) == ["arrowmesh", "mesh"]

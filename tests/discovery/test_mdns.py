"""The mDNS registry with real zeroconf on real sockets: on loopback in this process, and
between hosts made of network namespaces (tests/netns.py), with child processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from discovery import (
    Endpoint,
    InvalidDiscoveryUri,
    Outage,
    RegistryRejected,
    RegistryUnavailable,
    Snapshot,
    WatchEvent,
    sorted_endpoints,
)
from discovery._mdns import (
    Binding,
    MdnsRegistry,
    ProbeState,
    host_addresses,
    resolve_interface,
)
from discovery._txt import SERVICE_TYPE, instance_name
from tests import netns
from tests.conftest import ROOT, child_env
from tests.netns import Host, Network

Events = AsyncIterator[WatchEvent]
logger = logging.getLogger(__name__)


def unique(prefix: str) -> str:
    """A name no other test run on this machine uses (loopback is shared)."""
    return f"{prefix}-{secrets.token_hex(4)}"


def ids(event: WatchEvent) -> list[str] | None:
    return [e.id for e in event.endpoints] if isinstance(event, Snapshot) else None


async def next_event(events: Events, timeout: float = 5.0) -> WatchEvent:
    try:
        async with asyncio.timeout(timeout):
            return await anext(events)
    except TimeoutError:
        pytest.fail(f"no watch event within {timeout} s")


async def until(
    events: Events, predicate: Callable[[WatchEvent], bool], what: str, timeout: float = 5.0
) -> WatchEvent:
    """The first event satisfying `predicate`, within `timeout` seconds."""
    seen: list[WatchEvent] = []
    try:
        async with asyncio.timeout(timeout):
            async for event in events:
                if predicate(event):
                    return event
                seen.append(event)
    except TimeoutError:
        pass
    pytest.fail(f"timed out after {timeout} s waiting for {what}; saw {seen}")


@contextlib.asynccontextmanager
async def listener(port: int = 0) -> AsyncIterator[int]:
    """A TCP listener on 127.0.0.1 for probes to find (it closes what it accepts)."""
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", port)
    async with server:
        yield server.sockets[0].getsockname()[1]


def other_tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


# -- on loopback, in this process -----------------------------------------------------------


async def test_watch_follows_register_health_and_deregister_on_loopback() -> None:
    service = unique("embedder")
    async with listener() as port1, listener() as port2:
        async with (
            MdnsRegistry() as advertiser,
            MdnsRegistry() as watcher,
            contextlib.aclosing(watcher.watch(service)) as events,
        ):
            assert await next_event(events, 2.0) == Snapshot(())
            full = Endpoint(
                service,
                unique("e"),
                "127.0.0.1",
                port1,
                protocol="oip-http",
                shm_domain="dom",
                zone="z",
                weight=3,
                capacity=8,
                extra=(("gpu", "a100"),),
            )
            plain = Endpoint(service, unique("e"), "127.0.0.1", port2)
            await advertiser.register(full)
            await advertiser.register(plain)
            both = sorted_endpoints([full, plain])
            both_ids = [endpoint.id for endpoint in both]
            event = await until(events, lambda e: ids(e) == both_ids, "both endpoints")
            assert event == Snapshot(both)  # every field came through TXT

            await advertiser.set_health(full.id, False)
            await until(events, lambda e: ids(e) == [plain.id], "the goodbye")
            await advertiser.set_health(full.id, True)
            await until(events, lambda e: ids(e) == both_ids, "the re-advertisement")
            await advertiser.deregister(full.id)
            await until(events, lambda e: ids(e) == [plain.id], "the deregistration")
            await advertiser.deregister(full.id)  # unknown now: not an error
            with pytest.raises(KeyError):
                await advertiser.set_health(full.id, True)
            await advertiser.aclose()
            await until(events, lambda e: ids(e) == [], "the goodbye of aclose")
        assert other_tasks() == set()


async def test_quick_health_flaps_all_reach_the_watcher() -> None:
    # Receivers drop a packet identical to one seen in the last 800 ms; each flap must differ.
    service = unique("svc")
    async with (
        listener() as port,
        MdnsRegistry() as advertiser,
        MdnsRegistry() as watcher,
        contextlib.aclosing(watcher.watch(service)) as events,
    ):
        endpoint = Endpoint(service, unique("e"), "127.0.0.1", port)
        await advertiser.register(endpoint)
        for _ in range(3):  # each flap follows the last by milliseconds
            await until(events, lambda e: ids(e) == [endpoint.id], "the endpoint", 2.0)
            await advertiser.set_health(endpoint.id, False)
            await until(events, lambda e: ids(e) == [], "its goodbye", 2.0)
            await advertiser.set_health(endpoint.id, True)
        await until(events, lambda e: ids(e) == [endpoint.id], "the endpoint", 2.0)


async def test_aclose_ends_watches_and_leaves_no_task() -> None:
    service = unique("svc")
    async with listener() as port:
        registry = MdnsRegistry()
        await registry.register(Endpoint(service, unique("e"), "127.0.0.1", port))
        events = registry.watch(service)
        await until(events, lambda e: len(ids(e) or ()) == 1, "our own endpoint")
        waiting = asyncio.ensure_future(anext(events))
        await registry.aclose()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, 5.0)
        await registry.aclose()  # twice is fine
        with pytest.raises(RegistryUnavailable, match="closed"):
            await registry.register(Endpoint(service, "late", "127.0.0.1", port))
    assert other_tasks() == set()


async def test_dropped_endpoint_comes_back_when_its_probe_succeeds_again() -> None:
    service = unique("svc")
    async with MdnsRegistry() as advertiser, MdnsRegistry(probe_interval=0.1) as watcher:
        async with listener() as port, contextlib.aclosing(watcher.watch(service)) as events:
            endpoint = Endpoint(service, unique("e"), "127.0.0.1", port)
            await advertiser.register(endpoint)
            await until(events, lambda e: ids(e) == [endpoint.id], "the endpoint")
        # The listener is gone but the advertisement stays: only probes can tell.
        async with contextlib.aclosing(watcher.watch(service)) as events:
            await until(events, lambda e: ids(e) == [], "the probes to drop it", 3.0)
            async with listener(port):
                await until(events, lambda e: ids(e) == [endpoint.id], "it back", 10.0)


async def test_bad_txt_records_are_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    service = unique("svc")
    caplog.set_level(logging.WARNING, "discovery._mdns")
    bad = {
        unique("bad-weight"): b"\x09txtvers=1"
        + _string(f"service={service}")
        + b"\x0cweight=heavy",
        unique("truncated"): b"\x09txtvers=1" + _string(f"service={service}") + b"\x30zone",
        unique("nameless"): b"\x09txtvers=1\x05zone=",
    }
    raw = AsyncZeroconf(interfaces=["127.0.0.1"])
    try:
        async with listener() as port, MdnsRegistry() as registry:
            announcements = [
                await raw.async_register_service(
                    _raw_info(name, port, text), cooperating_responders=True
                )
                for name, text in bad.items()
            ]
            await asyncio.gather(*announcements)
            good = Endpoint(service, unique("good"), "127.0.0.1", port)
            await registry.register(good)
            async with contextlib.aclosing(registry.watch(service)) as events:
                event = await until(
                    events,
                    lambda e: ids(e) == [good.id] and isinstance(e, Snapshot) and e.rejected == 2,
                    "the good endpoint, and two rejected records of our service",
                )
                later = Endpoint(service, unique("later"), "127.0.0.1", port)
                await registry.register(later)
                expected = sorted([good.id, later.id])
                await until(events, lambda e: ids(e) == expected, "a later endpoint too")
        assert isinstance(event, Snapshot)
    finally:
        await raw.async_close()
    rejected = {
        getattr(r, "instance", "") for r in caplog.records if r.msg == "mdns record rejected"
    }
    assert {instance_name(name) for name in bad} <= rejected


async def test_an_unusable_interface_is_an_outage_and_registration_is_unavailable() -> None:
    async with MdnsRegistry(["am-nosuch0"]) as registry:
        async with contextlib.aclosing(registry.watch("svc")) as events:
            event = await next_event(events, 2.0)
        assert isinstance(event, Outage) and "does not exist" in event.reason
        with pytest.raises(RegistryUnavailable, match="does not exist"):
            await registry.register(Endpoint("svc", "e-1", "127.0.0.1", 7700))


@pytest.mark.parametrize("interfaces", [[], ["::1"], ["0.0.0.0"], [""], ["a/b"], ["x" * 16]])
def test_interfaces_must_be_names_or_ipv4_addresses(interfaces: list[str]) -> None:
    with pytest.raises(InvalidDiscoveryUri):
        MdnsRegistry(interfaces)


@pytest.mark.parametrize(
    ("knobs", "match"),
    [({"probe_interval": 0}, "probe_interval"), ({"probe_failures": 0}, "probe_failures")],
)
def test_probe_knobs_are_checked(knobs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MdnsRegistry(**knobs)  # type: ignore[arg-type]  # float for every knob


@pytest.mark.parametrize(
    ("endpoint", "match"),
    [
        (Endpoint("s", "e", "127.0.0.1", 1, extra=(("k", "v" * 300),)), "255"),
        (Endpoint("s", "e", "127.0.0.1", 1, extra=(("service", "x"),)), "reserved"),
        (Endpoint("s", "e", "localhost", 1), "IPv4"),
        (Endpoint("s", "e", "::1", 1), "IPv4"),
    ],
)
async def test_register_rejects_what_mdns_cannot_carry(endpoint: Endpoint, match: str) -> None:
    async with MdnsRegistry() as registry:
        with pytest.raises(RegistryRejected, match=match):
            await registry.register(endpoint)


def test_interfaces_resolve_by_name_or_address_to_a_binding() -> None:
    addresses = host_addresses()
    lo = Binding("127.0.0.1", socket.if_nametoindex("lo"))
    assert resolve_interface("lo", addresses) == resolve_interface("127.0.0.1", addresses) == lo
    with pytest.raises(RegistryUnavailable, match="does not exist"):
        resolve_interface("am-nosuch0", addresses)
    with pytest.raises(RegistryUnavailable, match="on no interface"):
        resolve_interface("10.99.255.254", addresses)
    with pytest.raises(RegistryUnavailable, match="no IPv4 address"):
        resolve_interface("lo", [])


def test_probe_state_drops_after_consecutive_failures_and_backs_off() -> None:
    state = ProbeState(failures_to_drop=2, interval=0.5)
    assert not state.alive and state.next_delay() == 0.5
    assert state.observe(True) and state.alive
    assert not state.observe(False) and state.alive  # one failure is not enough
    assert state.observe(False) and not state.alive
    assert [state.next_delay(), state.observe(False), state.next_delay()] == [1.0, False, 2.0]
    for _ in range(50):
        state.observe(False)
    assert state.next_delay() == 5.0
    assert state.observe(True) and state.alive and state.next_delay() == 0.5


def _string(value: str) -> bytes:
    return bytes([len(value)]) + value.encode()


def _raw_info(endpoint_id: str, port: int, text: bytes) -> AsyncServiceInfo:
    return AsyncServiceInfo(
        SERVICE_TYPE,
        instance_name(endpoint_id),
        port=port,
        properties=text,
        server=f"{endpoint_id}.arrowmesh.local.",
        parsed_addresses=["127.0.0.1"],
    )


# -- between network namespaces, in child processes ----------------------------------------


class Child:
    """A `tests.discovery._mdns_child` process in a namespace, read as JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, host: Host, *args: str) -> Child:
        argv = [sys.executable, "-m", "tests.discovery._mdns_child", *args]
        proc = await asyncio.create_subprocess_exec(
            *host.command(argv), stdout=asyncio.subprocess.PIPE, env=child_env(), cwd=ROOT
        )
        return cls(proc)

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                line = await self.proc.stdout.readline()
        except TimeoutError:
            pytest.fail(f"no line from the child within {timeout} s")
        if not line:
            pytest.fail(f"the child exited with {await self.proc.wait()}")
        event: dict[str, Any] = json.loads(line)
        return event

    async def until(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = 10.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            event = await self.next(max(deadline - time.monotonic(), 0.001))
            if predicate(event):
                return event

    async def stop(self) -> list[dict[str, Any]]:
        """SIGTERM (the child closes its registry), then SIGKILL if it lingers; the lines
        it printed and were not read yet."""
        if self.proc.returncode is None:
            self.proc.terminate()
        try:
            async with asyncio.timeout(10.0):
                out, _ = await self.proc.communicate()
        except TimeoutError:
            self.proc.kill()
            out, _ = await self.proc.communicate()
        return [json.loads(line) for line in out.splitlines()]


@contextlib.asynccontextmanager
async def children() -> AsyncIterator[list[Child]]:
    started: list[Child] = []
    try:
        yield started
    finally:
        for child in started:
            await child.stop()


def listing(endpoint_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["event"] == "snapshot" and endpoint_id in e["ids"]


def not_listing(endpoint_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["event"] == "snapshot" and endpoint_id not in e["ids"]


async def test_killed_advertiser_is_dropped_within_the_probe_deadline(
    netns_network: Network,
) -> None:
    a, b = netns_network.hosts
    service, endpoint_id = unique("svc"), unique("e")
    async with children() as started:
        watcher = await Child.start(b, "watch", b.interface, service)
        started.append(watcher)
        assert (await watcher.next())["ids"] == []
        advertiser = await Child.start(a, "advertise", a.interface, a.address, service, endpoint_id)
        started.append(advertiser)
        ready = await advertiser.next()
        seen = await watcher.until(listing(endpoint_id), "the endpoint to appear")
        appeared = seen["t"] - ready["t"]

        killed_at = time.monotonic()
        advertiser.proc.kill()  # no goodbye: only the probes can tell
        gone = await watcher.until(not_listing(endpoint_id), "the endpoint to be dropped")
        dropped = gone["t"] - killed_at
    logger.info("mdns latency", extra={"appeared": appeared, "dropped": dropped})
    assert dropped <= 3.0


async def test_a_registry_bound_to_lo_does_not_hear_other_interfaces(
    netns_network: Network,
) -> None:
    a, b = netns_network.hosts
    service, endpoint_id = unique("svc"), unique("e")
    async with children() as started:
        on_eth = await Child.start(b, "watch", b.interface, service)
        on_lo = await Child.start(b, "watch", "lo", service)
        started += [on_eth, on_lo]
        await on_eth.next()
        await on_lo.next()
        advertiser = await Child.start(a, "advertise", a.interface, a.address, service, endpoint_id)
        started.append(advertiser)
        await advertiser.next()
        # The same announcements reach host b's sockets at once: had the lo registry heard
        # them, it would have listed the endpoint by now (its probe would succeed).
        await on_eth.until(listing(endpoint_id), "the eth0 watcher to list it")
        await advertiser.stop()
        await on_eth.until(not_listing(endpoint_id), "the goodbye on eth0")
        rest = await on_lo.stop()
    assert all(event["ids"] == [] for event in rest), rest


async def test_watch_reports_an_outage_while_its_interface_is_down(
    netns_network: Network,
) -> None:
    a, b = netns_network.hosts
    service, endpoint_id = unique("svc"), unique("e")
    async with children() as started:
        watcher = await Child.start(b, "watch", b.interface, service)
        advertiser = await Child.start(a, "advertise", a.interface, a.address, service, endpoint_id)
        started += [watcher, advertiser]
        await advertiser.next()
        await watcher.until(listing(endpoint_id), "the endpoint")

        await _ip(b, "link", "set", b.interface, "down")
        outage = await watcher.until(lambda e: e["event"] == "outage", "an outage")
        assert "down" in outage["reason"]
        await _ip(b, "link", "set", b.interface, "up")
        await watcher.until(listing(endpoint_id), "the endpoint after the outage")


def test_the_netns_harness_removes_everything_even_when_the_body_fails() -> None:
    try:
        with netns.network(1):
            pass
    except netns.NetnsUnavailable as exc:
        pytest.skip(f"no network namespaces: {exc}")
    links_before = _link_names()
    made: list[Network] = []
    sleepers: list[subprocess.Popen[bytes]] = []

    def failing_test() -> None:
        with netns.network(2) as net:
            made.append(net)
            a, b = net.hosts
            sleepers.append(a.popen(["sleep", "60"]))
            assert b.run(["ip", "-br", "addr", "show", "eth0"]).split()[2] == f"{b.address}/16"
            raise RuntimeError("the test failed")

    with pytest.raises(RuntimeError, match=r"^the test failed$"):  # not a cleanup error
        failing_test()
    assert sleepers[0].wait(10) == -signal.SIGKILL
    names = [made[0].hub, *(host.netns for host in made[0].hosts)]
    assert not set(names) & {line.split()[0] for line in _ip_lines("netns", "list")}
    assert not _link_names() - links_before  # nothing was left in this namespace


def _link_names() -> set[str]:
    return {line.split(":")[1].strip().split("@")[0] for line in _ip_lines("-o", "link")}


def _ip_lines(*args: str) -> list[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=True, timeout=30)
    return done.stdout.splitlines()


async def _ip(host: Host, *args: str) -> None:
    proc = await asyncio.create_subprocess_exec(*host.ip(*args))
    assert await asyncio.wait_for(proc.wait(), 10.0) == 0

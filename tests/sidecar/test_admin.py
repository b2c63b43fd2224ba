"""The admin listener, served for real on 127.0.0.1 and asked over HTTP."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import aiohttp
import pytest
from prometheus_client import REGISTRY, Counter
from prometheus_client.parser import text_string_to_metric_families

from sidecar._admin import admin_app, start_admin, stop_admin
from sidecar._errors import ConfigError


@dataclass
class State:
    """A stand-in for the daemon: plain attributes satisfy AdminState's properties."""

    live: bool = True
    ready: bool = False
    ready_reason: str = "registering with discovery"
    services: dict[str, object] = field(
        default_factory=lambda: {"embedder": [{"id": "e1", "state": "healthy"}]}
    )
    settings: dict[str, object] = field(
        default_factory=lambda: {"service": "embedder", "discovery": "consul://***@c:8500"}
    )
    fail: bool = False

    def endpoints(self) -> Mapping[str, object]:
        if self.fail:
            raise RuntimeError("state is broken")
        return self.services

    def config(self) -> Mapping[str, object]:
        return self.settings


@dataclass
class Admin:
    state: State
    url: str
    http: aiohttp.ClientSession

    async def get(self, path: str, method: str = "GET") -> tuple[int, str, dict[str, str]]:
        async with self.http.request(method, self.url + path) as response:
            return response.status, await response.text(), dict(response.headers)

    async def json(self, path: str, method: str = "GET") -> tuple[int, object]:
        async with self.http.request(method, self.url + path) as response:
            assert response.content_type == "application/json"
            return response.status, await response.json()


@pytest.fixture
async def admin() -> AsyncIterator[Admin]:
    state = State()
    runner, bound = await start_admin(admin_app(state), "127.0.0.1", 0)
    host, port = bound.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    async with aiohttp.ClientSession() as http:
        yield Admin(state, f"http://{bound}", http)
    await stop_admin(runner)
    stray = asyncio.all_tasks() - {asyncio.current_task()}
    assert not stray, f"tasks left running after the admin listener stopped: {stray}"


async def test_healthz_is_ok_while_live_and_503_after(admin: Admin) -> None:
    assert await admin.json("/healthz") == (200, {"status": "ok"})
    admin.state.live = False
    assert await admin.json("/healthz") == (503, {"status": "not live"})


async def test_readyz_turns_from_503_with_the_reason_to_200(admin: Admin) -> None:
    assert await admin.json("/readyz") == (
        503,
        {"status": "not ready", "reason": "registering with discovery"},
    )
    admin.state.ready = True
    assert await admin.json("/readyz") == (200, {"status": "ready"})


async def test_endpoints_and_config_are_the_state_as_json(admin: Admin) -> None:
    assert await admin.json("/endpoints") == (200, admin.state.services)
    assert await admin.json("/config") == (200, admin.state.settings)


async def test_metrics_expose_the_default_registry_in_prometheus_text(admin: Admin) -> None:
    name = f"test_admin_{uuid.uuid4().hex}"
    counter = Counter(name, "a counter this test owns", ["path"])
    try:
        counter.labels(path="shm").inc(3)
        status, text, headers = await admin.get("/metrics")
    finally:
        REGISTRY.unregister(counter)
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=")
    families = {family.name: family for family in text_string_to_metric_families(text)}
    [sample] = [s for s in families[name].samples if s.name == f"{name}_total"]
    assert (sample.labels, sample.value) == ({"path": "shm"}, 3.0)


async def test_metrics_speak_openmetrics_when_asked(admin: Admin) -> None:
    async with admin.http.get(
        admin.url + "/metrics", headers={"Accept": "application/openmetrics-text"}
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await response.text()).endswith("# EOF\n")


async def test_an_unknown_path_is_404_with_a_json_error(admin: Admin) -> None:
    status, body = await admin.json("/nope")
    assert status == 404
    assert body == {
        "error": "no admin route /nope; routes: /healthz, /readyz, /metrics, /endpoints, /config"
    }


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_a_wrong_method_is_405_with_a_json_error_and_allow(admin: Admin, method: str) -> None:
    async with admin.http.request(method, admin.url + "/readyz") as response:
        assert response.status == 405
        assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD"}
        assert await response.json() == {"error": f"{method} not allowed on /readyz; use GET"}


async def test_head_answers_without_a_body(admin: Admin) -> None:
    status, text, _ = await admin.get("/healthz", method="HEAD")
    assert (status, text) == (200, "")


async def test_a_failing_state_is_500_with_a_json_error(
    admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    admin.state.fail = True
    assert await admin.json("/endpoints") == (
        500,
        {"error": "internal error; see the sidecar's log"},
    )
    assert "admin request failed" in caplog.text
    assert await admin.json("/healthz") == (200, {"status": "ok"})


async def test_a_port_in_use_raises_config_error_naming_the_setting(admin: Admin) -> None:
    port = int(admin.url.rsplit(":", 1)[1])
    with pytest.raises(ConfigError, match=rf"--admin-addr.*127\.0\.0\.1:{port}"):
        await start_admin(admin_app(admin.state), "127.0.0.1", port)


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
async def test_an_ipv6_listener_is_reported_in_brackets() -> None:
    runner, bound = await start_admin(admin_app(State()), "::1", 0)
    try:
        assert bound.startswith("[::1]:") and int(bound.rsplit(":", 1)[1]) > 0
        async with aiohttp.ClientSession() as http, http.get(f"http://{bound}/healthz") as r:
            assert r.status == 200
    finally:
        await stop_admin(runner)

"""A raw HTTP client for the agent API, for tests that must run against any agent.

It sends exactly the path and query given (no re-encoding), returns status, headers and body
as they came, and remembers the services it registered so a test leaves a real agent clean.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
from multidict import CIMultiDict
from yarl import URL


@dataclass(frozen=True, slots=True)
class Reply:
    """One HTTP answer."""

    status: int
    headers: Mapping[str, str]
    text: str

    def json(self) -> object:
        return json.loads(self.text)

    def obj(self) -> dict[str, object]:
        value = self.json()
        assert isinstance(value, dict), self.text
        return value

    def items(self) -> list[dict[str, object]]:
        value = self.json()
        assert isinstance(value, list), self.text
        return value

    @property
    def index(self) -> int:
        return int(self.headers["X-Consul-Index"])


@dataclass
class AgentClient:
    """Calls one agent at `address` ("host:port" or "scheme://host:port")."""

    session: aiohttp.ClientSession
    address: str
    token: str = ""
    emulated: bool = True
    # The agent's reaper timings (30 s interval, 1 m minimum DCSA) times this: 1 for a real
    # agent; the emulator runs them faster so the reaping item takes seconds, not minutes.
    reaper_scale: float = 1.0
    registered: set[str] = field(default_factory=set)

    @property
    def base(self) -> str:
        return self.address if "://" in self.address else f"http://{self.address}"

    async def call(self, method: str, path: str, query: str = "", body: object = None) -> Reply:
        """`method path?query`; a `body` that is not bytes is sent as JSON."""
        url = URL(self.base + path + (f"?{query}" if query else ""), encoded=True)
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        headers = {"X-Consul-Token": self.token} if self.token else {}
        async with self.session.request(method, url, data=data, headers=headers) as response:
            text = await response.text()
            # Header names are case-insensitive; agents send Go's canonical spelling.
            return Reply(response.status, CIMultiDict(response.headers), text)

    async def get(self, path: str, query: str = "") -> Reply:
        return await self.call("GET", path, query)

    async def register(self, body: Mapping[str, object], query: str = "") -> Reply:
        reply = await self.call("PUT", "/v1/agent/service/register", query, body)
        if reply.status == 200:
            keys = {key.lower(): value for key, value in body.items()}
            self.registered.add(str(keys.get("id") or keys["name"]))
        return reply

    async def deregister(self, service_id: str) -> Reply:
        self.registered.discard(service_id)
        return await self.call("PUT", f"/v1/agent/service/deregister/{service_id}")

    async def cleanup(self) -> None:
        """Deregister what this client registered (404s are fine: already gone)."""
        for service_id in sorted(self.registered):
            await self.deregister(service_id)

    async def services(self) -> dict[str, object]:
        return (await self.get("/v1/agent/services")).obj()

    async def checks(self) -> dict[str, dict[str, object]]:
        checks = (await self.get("/v1/agent/checks")).obj()
        return {key: value for key, value in checks.items() if isinstance(value, dict)}

    async def health(self, name: str, query: str = "") -> Reply:
        return await self.get(f"/v1/health/service/{name}", query)


async def eventually(
    predicate: Callable[[], Awaitable[bool]], timeout: float, what: str, poll: float = 0.05
) -> float:
    """Poll `predicate` until true (returns the seconds it took) or fail after `timeout`."""
    start = time.monotonic()
    while not await predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(poll)
    return time.monotonic() - start

"""Fixtures for the emulator's tests: the agent under test and fresh service names.

With `CONSUL_HTTP_ADDR` set the target is that real agent (token from `CONSUL_HTTP_TOKEN`);
otherwise each test gets a freshly started emulator with the agent's own timings, except
for the reaper's (30 s interval, 1 m minimum DCSA), which it runs at `REAPER_SCALE` of
them: the reaping item then checks the same sequence in seconds instead of minutes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from ._client import AgentClient
from ._emulator import ConsulEmulator

REAPER_SCALE = 0.1


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: waits out the agent's real timers (minutes); runs by default"
    )


@pytest.fixture
async def agent() -> AsyncIterator[AgentClient]:
    """A client for the target agent; registrations it made are removed afterwards."""
    real = os.environ.get("CONSUL_HTTP_ADDR", "")
    token = os.environ.get("CONSUL_HTTP_TOKEN", "") if real else ""
    async with aiohttp.ClientSession() as session:
        if real:
            client = AgentClient(session, real, token=token, emulated=False)
            yield client
            await client.cleanup()
            return
        async with ConsulEmulator(
            reap_interval=30.0 * REAPER_SCALE, min_deregister_after=60.0 * REAPER_SCALE
        ) as emulator:
            yield AgentClient(session, emulator.address, reaper_scale=REAPER_SCALE)


@pytest.fixture
def name() -> str:
    """A service name no other test (or earlier run against a real agent) uses."""
    return f"conf-{uuid.uuid4().hex[:12]}"

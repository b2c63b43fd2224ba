"""Fixtures for the emulator's tests: the agent under test and fresh service names.

With `CONSUL_HTTP_ADDR` set the target is that real agent (token from `CONSUL_HTTP_TOKEN`);
otherwise each test gets a freshly started emulator with the agent's own timings.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from ._client import AgentClient
from ._emulator import ConsulEmulator


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
        async with ConsulEmulator() as emulator:
            yield AgentClient(session, emulator.address)


@pytest.fixture
def name() -> str:
    """A service name no other test (or earlier run against a real agent) uses."""
    return f"conf-{uuid.uuid4().hex[:12]}"

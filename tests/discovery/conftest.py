"""Fixtures for the discovery tests: throwaway multi-host networks (see tests/netns.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests import netns


@pytest.fixture
def netns_network(request: pytest.FixtureRequest) -> Iterator[netns.Network]:
    """Hosts on a bridge, each in its own network namespace (2 unless parametrized
    indirectly with another count); skipped where namespaces cannot be made."""
    hosts: int = getattr(request, "param", 2)
    if reason := netns.unavailable_reason():
        pytest.skip(f"no network namespaces: {reason}")
    with contextlib.ExitStack() as stack:
        try:
            net = stack.enter_context(netns.network(hosts))
        except netns.NetnsUnavailable as exc:
            pytest.skip(f"no network namespaces: {exc}")
        yield net

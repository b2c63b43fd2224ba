"""Open the registry a `--discovery` URI names."""

from __future__ import annotations

from collections.abc import Mapping

from ._consul import ConsulRegistry
from ._mdns import MdnsRegistry
from ._registry import Registry
from ._static import StaticRegistry
from ._uri import ConsulUri, MdnsUri, StaticUri, parse_discovery_uri


def open_registry(uri: str | None, env: Mapping[str, str]) -> Registry:
    """The registry for a `--discovery` value (None: consul if CONSUL_HTTP_ADDR, else mdns).

    Raises InvalidDiscoveryUri. The result is an async context manager; enter it (or call
    `aclose()` when done).
    """
    parsed = parse_discovery_uri(uri, env)
    if isinstance(parsed, ConsulUri):
        return ConsulRegistry(parsed)
    if isinstance(parsed, MdnsUri):
        return MdnsRegistry(interfaces=parsed.interfaces)
    assert isinstance(parsed, StaticUri)
    return StaticRegistry(parsed.path)

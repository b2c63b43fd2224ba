"""The address a process advertises to the registry for a listener it bound."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Mapping

from discovery import InvalidDiscoveryUri, MdnsUri, interface_address, parse_discovery_uri


def advertise_address(bound_host: str, discovery: str | None, env: Mapping[str, str]) -> str:
    """`bound_host` unless it is a wildcard; then the mDNS interface's address, or this
    host's name's address, or loopback."""
    if bound_host not in ("0.0.0.0", "::", ""):
        return bound_host
    with contextlib.suppress(InvalidDiscoveryUri):
        uri = parse_discovery_uri(discovery, env)
        if isinstance(uri, MdnsUri):
            return interface_address(uri.interfaces[0])
    with contextlib.suppress(OSError):
        return socket.gethostbyname(socket.gethostname())
    return "127.0.0.1"

"""arrowmesh control plane: where services are and which endpoint to pick."""

from ._endpoint import META_KEYS, PROTOCOLS, Endpoint, Protocol, check_address
from ._errors import (
    DiscoveryError,
    InvalidDiscoveryUri,
    RecordError,
    RegistryRejected,
    RegistryUnavailable,
)
from ._registry import Outage, Registry, Snapshot, WatchEvent, sorted_endpoints
from ._uri import ConsulUri, DiscoveryUri, MdnsUri, StaticUri, parse_discovery_uri

__all__ = [
    "META_KEYS",
    "PROTOCOLS",
    "ConsulUri",
    "DiscoveryError",
    "DiscoveryUri",
    "Endpoint",
    "InvalidDiscoveryUri",
    "MdnsUri",
    "Outage",
    "Protocol",
    "RecordError",
    "Registry",
    "RegistryRejected",
    "RegistryUnavailable",
    "Snapshot",
    "StaticUri",
    "WatchEvent",
    "check_address",
    "parse_discovery_uri",
    "sorted_endpoints",
]

"""arrowmesh control plane: where services are and which endpoint to pick."""

from ._cluster import Cluster, Listener, Prober, tcp_prober
from ._consul import ConsulRegistry
from ._endpoint import META_KEYS, PROTOCOLS, Endpoint, Protocol, check_address
from ._errors import (
    DiscoveryError,
    InvalidDiscoveryUri,
    RecordError,
    RegistryRejected,
    RegistryUnavailable,
)
from ._mdns import MdnsRegistry, interface_address
from ._membership import Membership
from ._open import open_registry
from ._registry import Outage, Registry, Snapshot, WatchEvent, sorted_endpoints
from ._static import StaticRegistry, parse_static
from ._uri import ConsulUri, DiscoveryUri, MdnsUri, StaticUri, parse_discovery_uri

__all__ = [
    "META_KEYS",
    "PROTOCOLS",
    "Cluster",
    "ConsulRegistry",
    "ConsulUri",
    "DiscoveryError",
    "DiscoveryUri",
    "Endpoint",
    "InvalidDiscoveryUri",
    "Listener",
    "MdnsRegistry",
    "MdnsUri",
    "Membership",
    "Outage",
    "Prober",
    "Protocol",
    "RecordError",
    "Registry",
    "RegistryRejected",
    "RegistryUnavailable",
    "Snapshot",
    "StaticRegistry",
    "StaticUri",
    "WatchEvent",
    "check_address",
    "interface_address",
    "open_registry",
    "parse_discovery_uri",
    "parse_static",
    "sorted_endpoints",
    "tcp_prober",
]

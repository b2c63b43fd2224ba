"""arrowmesh control plane: where services are and which endpoint to pick."""

from ._balancer import AllEndpointsBusy, Balancer, NoHealthyEndpoint
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
from ._ewma import PeakEwmaBalancer, PeakEwmaPolicy
from ._hashring import RingHashBalancer, RingHashPolicy
from ._health import AppHealth, AppHealthPolicy
from ._hedge import HedgePolicy, Hedger
from ._latency import LatencyFilter
from ._load import EndpointLoad
from ._locality import LocalityBalancer, LocalityPolicy
from ._mdns import MdnsRegistry, interface_address
from ._membership import Membership
from ._open import open_registry
from ._outcome import Outcome
from ._outlier import Ejection, OutlierDetector, OutlierPolicy
from ._p2c import LeastRequestBalancer, LeastRequestPolicy
from ._registry import Outage, Registry, Snapshot, WatchEvent, sorted_endpoints
from ._retry import (
    Backoff,
    GiveUp,
    Retrier,
    Retry,
    RetryAccount,
    RetryBudget,
    RetryPolicy,
    retryable,
    time_left,
)
from ._shed import Admit, Reject, Shedder, ShedPolicy
from ._static import StaticRegistry, parse_static
from ._uri import ConsulUri, DiscoveryUri, MdnsUri, StaticUri, parse_discovery_uri
from ._wrr import RoundRobinBalancer, RoundRobinPolicy

__all__ = [
    "META_KEYS",
    "PROTOCOLS",
    "Admit",
    "AllEndpointsBusy",
    "AppHealth",
    "AppHealthPolicy",
    "Backoff",
    "Balancer",
    "Cluster",
    "ConsulRegistry",
    "ConsulUri",
    "DiscoveryError",
    "DiscoveryUri",
    "Ejection",
    "Endpoint",
    "EndpointLoad",
    "GiveUp",
    "HedgePolicy",
    "Hedger",
    "InvalidDiscoveryUri",
    "LatencyFilter",
    "LeastRequestBalancer",
    "LeastRequestPolicy",
    "Listener",
    "LocalityBalancer",
    "LocalityPolicy",
    "MdnsRegistry",
    "MdnsUri",
    "Membership",
    "NoHealthyEndpoint",
    "Outage",
    "Outcome",
    "OutlierDetector",
    "OutlierPolicy",
    "PeakEwmaBalancer",
    "PeakEwmaPolicy",
    "Prober",
    "Protocol",
    "RecordError",
    "Registry",
    "RegistryRejected",
    "RegistryUnavailable",
    "Reject",
    "Retrier",
    "Retry",
    "RetryAccount",
    "RetryBudget",
    "RetryPolicy",
    "RingHashBalancer",
    "RingHashPolicy",
    "RoundRobinBalancer",
    "RoundRobinPolicy",
    "ShedPolicy",
    "Shedder",
    "Snapshot",
    "StaticRegistry",
    "StaticUri",
    "WatchEvent",
    "check_address",
    "interface_address",
    "open_registry",
    "parse_discovery_uri",
    "parse_static",
    "retryable",
    "sorted_endpoints",
    "tcp_prober",
    "time_left",
]

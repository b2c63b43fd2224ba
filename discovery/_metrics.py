"""Prometheus metrics of the discovery package (the process-wide default registry)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge

CLUSTER_ENDPOINTS: Final = Gauge(
    "arrowmesh_cluster_endpoints", "Routable endpoints of a service", ["service"]
)
CLUSTER_STALE: Final = Gauge(
    "arrowmesh_cluster_registry_stale",
    "1 while the registry is unreachable and the last good endpoint set is served",
    ["service"],
)
CLUSTER_UPDATES: Final = Counter(
    "arrowmesh_cluster_updates", "Changes of a service's routable endpoint set", ["service"]
)
REJECTED_RECORDS: Final = Gauge(
    "arrowmesh_discovery_rejected_records",
    "Malformed registry records skipped in the last answer for a service",
    ["service"],
)

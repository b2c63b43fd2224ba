"""The sidecar's Prometheus metrics (process-wide default registry)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

REQUESTS: Final = Counter(
    "arrowmesh_requests",
    "Requests relayed, by service, endpoint and outcome (ok or the error code)",
    ["service", "endpoint", "outcome"],
)
LATENCY: Final = Histogram(
    "arrowmesh_request_seconds",
    "Time from a request's arrival to its reply, by service",
    ["service"],
    buckets=(
        0.0001,
        0.00025,
        0.0005,
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1,
        2.5,
        5,
        10,
    ),
)
IN_FLIGHT: Final = Gauge("arrowmesh_requests_in_flight", "Requests being relayed", ["service"])
RELAYED_BYTES: Final = Counter(
    "arrowmesh_relayed_bytes",
    "Tensor bytes relayed per hop: by reference (shared memory), copied, or over the network",
    ["mode"],
)
SHM_LEASES: Final = Gauge("arrowmesh_shm_leases", "Shared-memory leases this process holds")
SHM_USED: Final = Gauge("arrowmesh_shm_used_bytes", "Bytes of this process's arenas in use")
APP_HEALTHY: Final = Gauge("arrowmesh_app_healthy", "1 while the fronted app answers its probe")
DENIED: Final = Counter(
    "arrowmesh_denied",
    "Requests refused by the authorization policy, by called service and caller",
    ["service", "caller"],
)
RETRIES: Final = Counter(
    "arrowmesh_retries",
    "Tries after the first, by service and the outcome retried",
    ["service", "outcome"],
)
MESH_REFUSED: Final = Counter(
    "arrowmesh_mesh_refused",
    "Connections to the mesh listener closed for breaking the protocol (malformed frames,"
    " no HELLO in time)",
)
HTTP_REFUSED: Final = Counter(
    "arrowmesh_http_refused",
    "HTTP requests refused before a handler ran (unparsable, or the caller gone), by listener",
    ["listener", "reason"],
)
HEDGES: Final = Counter("arrowmesh_hedges", "Second tries sent past the hedge delay", ["service"])
LOOP_TASKS: Final = Gauge(
    "arrowmesh_event_loop_tasks", "Tasks alive on the sidecar's event loop (flat when idle)"
)
FAST_LANE: Final = Counter(
    "arrowmesh_fast_lane",
    "Inference requests a local listener passed to the fronted OIP app as they came (the"
    " fast lane), by service, protocol (http, grpc) and outcome",
    ["service", "protocol", "outcome"],
)

"""arrowmesh sidecar: the daemon and the library API (MeshClient, serve)."""

from ._blocking import BlockingMeshClient
from ._client import MeshClient, Tensors
from ._errors import (
    STATUS,
    ConfigError,
    DeadlineExceeded,
    HandlerError,
    InvalidInput,
    MeshError,
    RemoteError,
    Unavailable,
)
from ._router import RoutePolicy
from ._serve import Service, ServiceStats, alloc, serve
from ._settings import Settings
from ._signature import TensorSpec

__all__ = [
    "STATUS",
    "BlockingMeshClient",
    "ConfigError",
    "DeadlineExceeded",
    "HandlerError",
    "InvalidInput",
    "MeshClient",
    "MeshError",
    "RemoteError",
    "RoutePolicy",
    "Service",
    "ServiceStats",
    "Settings",
    "TensorSpec",
    "Tensors",
    "Unavailable",
    "alloc",
    "serve",
]

"""Upstream adapters: a sidecar in front of an Open Inference Protocol model server
(Triton, MLServer, KServe runtimes), over HTTP or gRPC, with tritonclient's asyncio clients.
"""

from ._status import GRPC_CODES, HTTP_CODES, code_of_grpc, code_of_http, upstream_error
from ._tensors import MESH_PARAMS, request_parameters
from ._upstream import Encoding, OipClient, OipProtocol, OipUpstream, UpstreamConfig

__all__ = [
    "GRPC_CODES",
    "HTTP_CODES",
    "MESH_PARAMS",
    "Encoding",
    "OipClient",
    "OipProtocol",
    "OipUpstream",
    "UpstreamConfig",
    "code_of_grpc",
    "code_of_http",
    "request_parameters",
    "upstream_error",
]

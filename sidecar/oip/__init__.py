"""The Open Inference Protocol (KServe v2 / Triton) in front of the mesh.

A protocol-neutral core (requests, responses, datatypes, shared-memory regions,
statistics, `OipServer`) and the HTTP front door on it (`oip_routes`); a gRPC front door
parses into the same `InferRequest` and serves it with the same `OipServer`.
"""

from .._signature import TensorSpec
from ._datatypes import (
    DATATYPES,
    datatype_of,
    element_count,
    from_json,
    from_raw,
    numpy_dtype,
    raw_parts,
    raw_size,
    serialize_bytes,
    to_json,
)
from ._errors import OipError, oip_error_of, unknown_model
from ._grpc import OipGrpcService, grpc_options
from ._http import oip_routes
from ._json import infer_response, parse_infer_request
from ._model import (
    InferRequest,
    InferResponse,
    InputTensor,
    ModelMetadata,
    OutputTensor,
    Param,
    Params,
    RequestedOutput,
    ServerMetadata,
    ShmRef,
)
from ._server import EXTENSIONS, Mesh, OipServer, Send
from ._shm import RegionStatus, SystemShmRegistry
from ._stats import Duration, ModelStats, StatsBook

__all__ = [
    "DATATYPES",
    "EXTENSIONS",
    "Duration",
    "InferRequest",
    "InferResponse",
    "InputTensor",
    "Mesh",
    "ModelMetadata",
    "ModelStats",
    "OipError",
    "OipGrpcService",
    "OipServer",
    "OutputTensor",
    "Param",
    "Params",
    "RegionStatus",
    "RequestedOutput",
    "Send",
    "ServerMetadata",
    "ShmRef",
    "StatsBook",
    "SystemShmRegistry",
    "TensorSpec",
    "datatype_of",
    "element_count",
    "from_json",
    "from_raw",
    "grpc_options",
    "infer_response",
    "numpy_dtype",
    "oip_error_of",
    "oip_routes",
    "parse_infer_request",
    "raw_parts",
    "raw_size",
    "serialize_bytes",
    "to_json",
    "unknown_model",
]

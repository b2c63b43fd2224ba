"""arrowmesh data plane: tensors, frames, memory and links; nothing about services."""

from ._copy import copy_parallel
from ._dtypes import DATATYPES, datatype_of, numpy_dtype
from ._errors import (
    Cancelled,
    DeadlineExceeded,
    ErrorCode,
    FrameError,
    LimitExceeded,
    LinkClosed,
    RemoteError,
    TransportError,
    error_code_of,
)
from ._frame import FrameDecoder, Message
from ._header import ErrorInfo, Header, Kind, Placement, TensorMeta, pack_header, unpack_header
from ._kept import KeptRefs
from ._limits import Limits
from ._link import (
    Authorizer,
    BodyPart,
    Handler,
    LinkServer,
    Reply,
    StreamLink,
    connect,
    parse_address,
)
from ._pool import BufferPool, PoolStats, RecvBuffer
from ._shm import LinkCounters, ShmDomain, ShmPlacer, ShmStats, header_refs
from ._sync import SyncLink
from ._tensors import Placer, decode_tensors, encode_message, encode_tensors
from ._tls import Tls, TlsFiles, identity_uri, peer_identities, service_of

__all__ = [
    "DATATYPES",
    "Authorizer",
    "BodyPart",
    "BufferPool",
    "Cancelled",
    "DeadlineExceeded",
    "ErrorCode",
    "ErrorInfo",
    "FrameDecoder",
    "FrameError",
    "Handler",
    "Header",
    "KeptRefs",
    "Kind",
    "LimitExceeded",
    "Limits",
    "LinkClosed",
    "LinkCounters",
    "LinkServer",
    "Message",
    "Placement",
    "Placer",
    "PoolStats",
    "RecvBuffer",
    "RemoteError",
    "Reply",
    "ShmDomain",
    "ShmPlacer",
    "ShmStats",
    "StreamLink",
    "SyncLink",
    "TensorMeta",
    "Tls",
    "TlsFiles",
    "TransportError",
    "connect",
    "copy_parallel",
    "datatype_of",
    "decode_tensors",
    "encode_message",
    "encode_tensors",
    "error_code_of",
    "header_refs",
    "identity_uri",
    "numpy_dtype",
    "pack_header",
    "parse_address",
    "peer_identities",
    "service_of",
    "unpack_header",
]

"""The Open Inference Protocol's requests, responses and metadata, independent of the wire.

The HTTP front door builds these from JSON (and the binary tensor data extension), a gRPC
front door from `ModelInferRequest` messages; `OipServer` serves them the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy.typing as npt

from .._signature import TensorSpec
from ._errors import OipError

Param = bool | int | float | str
Params = Mapping[str, Param]
Array = npt.NDArray[Any]

# Parameters that steer the protocol itself and are not passed on to the model.
SHM_REGION: Final = "shared_memory_region"
SHM_OFFSET: Final = "shared_memory_offset"
SHM_BYTE_SIZE: Final = "shared_memory_byte_size"
BINARY_DATA: Final = "binary_data"
BINARY_DATA_SIZE: Final = "binary_data_size"
BINARY_DATA_OUTPUT: Final = "binary_data_output"
CLASSIFICATION: Final = "classification"
SEQUENCE_ID: Final = "sequence_id"
TIMEOUT: Final = "timeout"  # microseconds, as Triton reads it
DEFAULT_VERSION: Final = "1"  # a mesh service has one version; any version asked is served


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """What `GET /v2/models/{name}` (and gRPC ModelMetadata) reports."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    """What `GET /v2` (and gRPC ServerMetadata) reports."""

    name: str
    version: str
    extensions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ShmRef:
    """Where a tensor's bytes are in a registered region: name, size and offset in it."""

    region: str
    byte_size: int
    offset: int = 0

    @classmethod
    def from_params(cls, params: Params, what: str) -> ShmRef | None:
        """The reference `params` make, or None. Raises OipError when it is incomplete."""
        region = params.get(SHM_REGION)
        size = params.get(SHM_BYTE_SIZE)
        offset = params.get(SHM_OFFSET, 0)
        if region is None and size is None:
            return None
        if not isinstance(region, str) or not region:
            raise OipError.invalid(
                f"{what}: '{SHM_BYTE_SIZE}' needs '{SHM_REGION}', the name of a region"
            )
        if not _whole(size):
            raise OipError.invalid(
                f"{what}: '{SHM_REGION}' needs '{SHM_BYTE_SIZE}', a byte count >= 0"
            )
        if not _whole(offset):
            raise OipError.invalid(f"{what}: '{SHM_OFFSET}' must be a byte offset >= 0")
        return cls(region, int(size), int(offset))  # type: ignore[arg-type]  # _whole checked


def timeout_seconds(value: object) -> float | None:
    """The `timeout` parameter's value (microseconds) in seconds, or None when it is not a
    positive, finite number (then it sets no deadline)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    return float(value) / 1e6


def _whole(value: object) -> bool:
    return type(value) is int and value >= 0


@dataclass(frozen=True, slots=True)
class InputTensor:
    """One input: its data as an array, or where it is in shared memory (`shm`)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Array | None = None
    shm: ShmRef | None = None
    parameters: Params = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """An output the caller asks for: as binary data or JSON (None: the request's
    default), or written into a shared-memory region."""

    name: str
    binary: bool | None = None
    shm: ShmRef | None = None


@dataclass(frozen=True, slots=True)
class InferRequest:
    """An inference request: model, id, parameters, inputs, and the outputs wanted (all
    of them when `outputs` is empty, in binary form when `binary_output`)."""

    model_name: str
    inputs: tuple[InputTensor, ...]
    model_version: str = ""
    id: str = ""
    parameters: Params = field(default_factory=dict)
    outputs: tuple[RequestedOutput, ...] = ()
    binary_output: bool = False


@dataclass(frozen=True, slots=True)
class OutputTensor:
    """One output: its data (None when written into shared memory, see `shm`), and
    whether the caller wants it in binary form."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Array | None
    binary: bool = False
    shm: ShmRef | None = None


@dataclass(frozen=True, slots=True)
class InferResponse:
    """An inference response, outputs in the order the caller asked for them."""

    model_name: str
    model_version: str
    id: str
    outputs: tuple[OutputTensor, ...]
    parameters: Params = field(default_factory=dict)

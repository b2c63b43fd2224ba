"""The JSON side of the OIP REST API: requests parsed, responses built (no I/O).

An inference request's body is a JSON object, followed, with the binary tensor data
extension, by the raw bytes of the inputs that carry `binary_data_size`, in input order;
`Inference-Header-Content-Length` says where the JSON ends. A response is built the same
way: outputs asked for as binary data follow the JSON object.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from .._signature import TensorSpec
from ._datatypes import from_json, from_raw, raw_parts, to_json
from ._errors import OipError
from ._model import (
    BINARY_DATA,
    BINARY_DATA_OUTPUT,
    BINARY_DATA_SIZE,
    CLASSIFICATION,
    InferRequest,
    InferResponse,
    InputTensor,
    ModelMetadata,
    Param,
    RequestedOutput,
    ServerMetadata,
    ShmRef,
)
from ._shm import RegionStatus
from ._stats import Duration, ModelStats

JsonObject = dict[str, Any]

# Triton's model configuration names of the datatypes (`GET .../config`).
CONFIG_TYPES: Final = {
    "BOOL": "TYPE_BOOL", "INT8": "TYPE_INT8", "INT16": "TYPE_INT16", "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64", "UINT8": "TYPE_UINT8", "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32", "UINT64": "TYPE_UINT64", "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32", "FP64": "TYPE_FP64", "BF16": "TYPE_BF16", "BYTES": "TYPE_STRING",
}  # fmt: skip


def dumps(document: object) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(document, separators=(",", ":")).encode()


def parse_json(text: bytes | memoryview, what: str) -> object:
    """The JSON document `text`. Raises OipError saying what could not be parsed."""
    try:
        return json.loads(bytes(text))
    except (ValueError, UnicodeDecodeError) as exc:
        raise OipError.invalid(f"failed to parse the {what} JSON buffer: {exc}") from None


# Requests


def parse_infer_request(
    model: str, version: str, header: bytes | memoryview, binary: memoryview | None = None
) -> InferRequest:
    """The request whose JSON is `header` and binary tensor data `binary`. Raises OipError."""
    doc = parse_json(header, "request")
    if not isinstance(doc, dict):
        raise OipError.invalid("the inference request must be a JSON object")
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise OipError.invalid(f"request 'id' must be a string, got {request_id!r:.40}")
    parameters = _params(doc.get("parameters"), "request")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise OipError.invalid("the inference request needs 'inputs', a non-empty array")
    binary = binary if binary is not None else memoryview(b"")
    inputs: list[InputTensor] = []
    at = 0
    for index, entry in enumerate(raw_inputs):
        tensor, at = _input(entry, index, binary, at)
        inputs.append(tensor)
    if at != binary.nbytes:
        raise OipError.invalid(
            f"the request has {binary.nbytes - at} bytes of binary data beyond what its "
            "inputs' 'binary_data_size' parameters account for"
        )
    raw_outputs = doc.get("outputs", [])
    if not isinstance(raw_outputs, list):
        raise OipError.invalid("request 'outputs' must be an array")
    outputs = tuple(_output(entry) for entry in raw_outputs)
    names = [o.name for o in outputs]
    if len(set(names)) != len(names):
        raise OipError.invalid(f"an output is requested more than once: {names}")
    binary_output = parameters.get(BINARY_DATA_OUTPUT, False)
    if not isinstance(binary_output, bool):
        raise OipError.invalid(f"parameter '{BINARY_DATA_OUTPUT}' must be a boolean")
    return InferRequest(
        model_name=model,
        model_version=version,
        id=request_id,
        parameters=parameters,
        inputs=tuple(inputs),
        outputs=outputs,
        binary_output=binary_output,
    )


def _input(entry: object, index: int, binary: memoryview, at: int) -> tuple[InputTensor, int]:
    if not isinstance(entry, dict):
        raise OipError.invalid(f"input {index} must be a JSON object")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise OipError.invalid(f"input {index} needs a 'name'")
    datatype = entry.get("datatype")
    if not isinstance(datatype, str):
        raise OipError.invalid(f"input '{name}' needs a 'datatype'")
    shape = _shape(entry.get("shape"), name)
    params = _params(entry.get("parameters"), f"input '{name}'")
    shm = ShmRef.from_params(params, f"input '{name}'")
    size = params.get(BINARY_DATA_SIZE)
    given = [what for what, v in (("data", entry.get("data")), ("binary data", size),
                                  ("a shared-memory region", shm)) if v is not None]  # fmt: skip
    if len(given) != 1:
        why = "none" if not given else " and ".join(given)
        raise OipError.invalid(
            f"input '{name}' must have exactly one of 'data', binary data "
            f"('{BINARY_DATA_SIZE}') or a shared-memory region; it has {why}"
        )
    if shm is not None:
        return InputTensor(name, datatype, shape, shm=shm, parameters=params), at
    if size is None:
        data = from_json(name, datatype, shape, entry["data"])
        return InputTensor(name, datatype, shape, data, parameters=params), at
    if type(size) is not int or size < 0:
        raise OipError.invalid(f"input '{name}': '{BINARY_DATA_SIZE}' must be a byte count >= 0")
    if at + size > binary.nbytes:
        raise OipError.invalid(
            f"input '{name}' says {size} bytes of binary data, but only "
            f"{binary.nbytes - at} are left in the request body"
        )
    data = from_raw(name, datatype, shape, binary[at : at + size])
    return InputTensor(name, datatype, shape, data, parameters=params), at + size


def _output(entry: object) -> RequestedOutput:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise OipError.invalid("each requested output must be a JSON object with a 'name'")
    name = entry["name"]
    params = _params(entry.get("parameters"), f"output '{name}'")
    if params.get(CLASSIFICATION):
        raise OipError.invalid(f"output '{name}': the classification extension is not supported")
    binary = params.get(BINARY_DATA)
    if binary is not None and not isinstance(binary, bool):
        raise OipError.invalid(f"output '{name}': '{BINARY_DATA}' must be a boolean")
    shm = ShmRef.from_params(params, f"output '{name}'")
    return RequestedOutput(name, None if shm is not None else binary, shm)


def _shape(value: object, name: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(type(d) is int and d >= 0 for d in value):
        raise OipError.invalid(
            f"input '{name}' needs a 'shape', an array of integers >= 0, got {value!r:.60}"
        )
    return tuple(value)


def _params(value: object, what: str) -> dict[str, Param]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise OipError.invalid(f"{what}: 'parameters' must be a JSON object")
    for key, item in value.items():
        if not isinstance(item, bool | int | float | str):
            raise OipError.invalid(f"{what}: parameter '{key}' must be a boolean, number or string")
    return value


# Responses


def infer_response(response: InferResponse) -> tuple[bytes, list[memoryview]]:
    """The response's JSON and, in order, the raw bytes of its binary outputs."""
    outputs: list[JsonObject] = []
    parts: list[memoryview] = []
    for out in response.outputs:
        entry: JsonObject = {"name": out.name, "datatype": out.datatype, "shape": list(out.shape)}
        if out.data is not None and out.binary:
            raw = raw_parts(out.data)
            entry["parameters"] = {BINARY_DATA_SIZE: sum(p.nbytes for p in raw)}
            parts += raw
        elif out.data is not None:
            entry["data"] = to_json(out.name, out.data)
        outputs.append(entry)
    doc: JsonObject = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = dict(response.parameters)
    doc["outputs"] = outputs
    return dumps(doc), parts


def server_metadata(meta: ServerMetadata) -> JsonObject:
    """`GET /v2`."""
    return {"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)}


def model_metadata(meta: ModelMetadata) -> JsonObject:
    """`GET /v2/models/{name}`."""
    return {
        "name": meta.name,
        "versions": list(meta.versions),
        "platform": meta.platform,
        "inputs": [_tensor(t) for t in meta.inputs],
        "outputs": [_tensor(t) for t in meta.outputs],
    }


def model_config(meta: ModelMetadata) -> JsonObject:
    """`GET /v2/models/{name}/config`: the metadata as Triton's model configuration."""
    return {
        "name": meta.name,
        "platform": meta.platform,
        "backend": "",
        "max_batch_size": 0,
        "input": [_config_tensor(t) for t in meta.inputs],
        "output": [_config_tensor(t) for t in meta.outputs],
    }


def _tensor(spec: TensorSpec) -> JsonObject:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def _config_tensor(spec: TensorSpec) -> JsonObject:
    return {"name": spec.name, "data_type": CONFIG_TYPES[spec.datatype], "dims": list(spec.shape)}


def shm_status(regions: Sequence[RegionStatus]) -> list[JsonObject]:
    """`GET /v2/systemsharedmemory[/region/{name}]/status`."""
    return [
        {"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size}
        for r in regions
    ]


def model_stats(stats: Sequence[ModelStats]) -> JsonObject:
    """`GET /v2/models[/{name}[/versions/{v}]]/stats`."""
    return {"model_stats": [_model_stat(s) for s in stats]}


def _model_stat(s: ModelStats) -> JsonObject:
    durations: Mapping[str, Duration] = {
        "success": s.success, "fail": s.fail, "queue": s.queue,
        "compute_input": s.compute_input, "compute_infer": s.compute_infer,
        "compute_output": s.compute_output, "cache_hit": s.cache_hit,
    }  # fmt: skip
    return {
        "name": s.name,
        "version": s.version,
        "last_inference": s.last_inference_ms,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {k: {"count": d.count, "ns": d.ns} for k, d in durations.items()},
        "batch_stats": [],
    }

"""OIP gRPC messages (tritonclient's generated `inference` classes) to and from the core's
requests, responses and metadata. No I/O.

A request's tensor bytes come apart from the message (`_grpc_wire.split_raw`) as views;
input `i` without a region or typed `contents` takes the next of them, in input order, as
Triton does. A response carries every output's bytes in `raw_output_contents`, one entry
per output in output order (empty for an output written into a region), again as Triton
does: tritonclient finds an output's bytes by its index among the outputs.

The generated classes are untyped; `Proto` marks where one is handled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeAlias

from tritonclient.grpc import model_config_pb2, service_pb2

from ._datatypes import from_json, from_raw, raw_parts
from ._errors import OipError
from ._grpc_wire import with_raw
from ._json import CONFIG_TYPES
from ._model import (
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

Proto: TypeAlias = Any  # a generated protobuf message (the classes carry no types)
Part = bytes | memoryview

# The typed `contents` field each datatype's values go in (FP16 and BF16 have none: raw only).
CONTENTS: Final = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
    "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
    "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip
_EMPTY: Final = memoryview(b"")


# Requests


def infer_request(message: Proto, raws: Sequence[memoryview]) -> InferRequest:
    """The core's request for a `ModelInferRequest` whose raw input contents are `raws`.
    Raises OipError when the message is inconsistent."""
    model = str(message.model_name)
    inputs: list[InputTensor] = []
    next_raw = 0
    for tensor in message.inputs:
        parsed, used = _input(tensor, raws, next_raw)
        inputs.append(parsed)
        next_raw += used
    if next_raw != len(raws):
        raise OipError.invalid(
            f"the request has {len(raws)} raw_input_contents but only {next_raw} of its inputs "
            f"read theirs from it (model '{model}')"
        )
    if not inputs:
        raise OipError.invalid(f"the inference request for model '{model}' has no inputs")
    outputs = tuple(_output(o) for o in message.outputs)
    names = [o.name for o in outputs]
    if len(set(names)) != len(names):
        raise OipError.invalid(f"an output is requested more than once: {names}")
    return InferRequest(
        model_name=model,
        model_version=str(message.model_version),
        id=str(message.id),
        parameters=params(message.parameters, "request"),
        inputs=tuple(inputs),
        outputs=outputs,
    )


def _input(tensor: Proto, raws: Sequence[memoryview], next_raw: int) -> tuple[InputTensor, int]:
    """The input `tensor` and how many of `raws` it read (0 or 1)."""
    name, datatype = str(tensor.name), str(tensor.datatype)
    if not name:
        raise OipError.invalid("each input needs a 'name'")
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise OipError.invalid(f"input '{name}' has a negative dimension in shape {list(shape)}")
    extra = params(tensor.parameters, f"input '{name}'")
    shm = ShmRef.from_params(extra, f"input '{name}'")
    typed = tensor.HasField("contents")
    if shm is not None:
        if typed:
            raise OipError.invalid(f"input '{name}' has both 'contents' and a shared-memory region")
        return InputTensor(name, datatype, shape, shm=shm, parameters=extra), 0
    if typed:
        if raws:
            raise OipError.invalid(
                f"input '{name}': 'contents' must not be given when the request uses "
                "raw_input_contents"
            )
        data = from_json(name, datatype, shape, _contents(tensor.contents, name, datatype))
        return InputTensor(name, datatype, shape, data, parameters=extra), 0
    if next_raw >= len(raws):
        raise OipError.invalid(
            f"input '{name}' has no data: give it in raw_input_contents, 'contents' or a "
            "shared-memory region"
        )
    data = from_raw(name, datatype, shape, raws[next_raw])
    return InputTensor(name, datatype, shape, data, parameters=extra), 1


def _contents(contents: Proto, name: str, datatype: str) -> list[Any]:
    field = CONTENTS.get(datatype)
    if field is None:
        raise OipError.invalid(
            f"input '{name}' of datatype {datatype} takes its data in raw_input_contents only"
        )
    for descriptor, _ in contents.ListFields():
        if descriptor.name != field:
            raise OipError.invalid(
                f"input '{name}' of datatype {datatype} takes 'contents.{field}', "
                f"not '{descriptor.name}'"
            )
    return list(getattr(contents, field))


def _output(output: Proto) -> RequestedOutput:
    name = str(output.name)
    extra = params(output.parameters, f"output '{name}'")
    if extra.get(CLASSIFICATION):
        raise OipError.invalid(f"output '{name}': the classification extension is not supported")
    return RequestedOutput(name, shm=ShmRef.from_params(extra, f"output '{name}'"))


def params(entries: Mapping[str, Proto], what: str) -> dict[str, Param]:
    """The values of a map of `InferParameter`s. Raises OipError for one without a value."""
    out: dict[str, Param] = {}
    for key, entry in entries.items():
        value = param_value(entry)
        if value is None:
            raise OipError.invalid(f"{what}: parameter '{key}' has no value")
        out[str(key)] = value
    return out


def param_value(entry: Proto | None) -> Param | None:
    """The value an `InferParameter` holds (None: no parameter, or one without a value)."""
    which = entry.WhichOneof("parameter_choice") if entry is not None else None
    if which is None:
        return None
    value = getattr(entry, which)
    assert isinstance(value, bool | int | float | str)
    return value


def _set_params(target: Proto, values: Mapping[str, Param]) -> None:
    for key, value in values.items():
        if isinstance(value, bool):
            target[key].bool_param = value
        elif isinstance(value, int):
            target[key].int64_param = value
        elif isinstance(value, float):
            target[key].double_param = value
        else:
            target[key].string_param = value


# Responses


def infer_response(response: InferResponse) -> list[Part]:
    """`ModelInferResponse` in wire form, as buffers to write in order (tensor bytes are
    views on the outputs' arrays)."""
    message = service_pb2.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    _set_params(message.parameters, response.parameters)
    raws: list[memoryview] = []
    for out in response.outputs:
        message.outputs.add(name=out.name, datatype=out.datatype, shape=out.shape)
        if out.data is None:
            raws.append(_EMPTY)
            continue
        parts = raw_parts(out.data)
        raws.append(parts[0] if len(parts) == 1 else memoryview(b"".join(parts)))
    return with_raw(message.SerializeToString(), raws)


def stream_error(message: str, request_id: str) -> bytes:
    """A `ModelStreamInferResponse` that reports `message` for the request `request_id`."""
    response = service_pb2.ModelStreamInferResponse(error_message=message)
    response.infer_response.id = request_id
    data: bytes = response.SerializeToString()
    return data


def server_metadata(meta: ServerMetadata) -> Proto:
    """ServerMetadataResponse."""
    return service_pb2.ServerMetadataResponse(
        name=meta.name, version=meta.version, extensions=meta.extensions
    )


def model_metadata(meta: ModelMetadata) -> Proto:
    """ModelMetadataResponse."""
    tensor = service_pb2.ModelMetadataResponse.TensorMetadata
    return service_pb2.ModelMetadataResponse(
        name=meta.name,
        versions=meta.versions,
        platform=meta.platform,
        inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.inputs],
        outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.outputs],
    )


def model_config(meta: ModelMetadata) -> Proto:
    """ModelConfigResponse: the metadata as Triton's model configuration."""
    kind = model_config_pb2.DataType.Value
    config = model_config_pb2.ModelConfig(
        name=meta.name,
        platform=meta.platform,
        max_batch_size=0,
        input=[
            model_config_pb2.ModelInput(
                name=t.name, data_type=kind(CONFIG_TYPES[t.datatype]), dims=t.shape
            )
            for t in meta.inputs
        ],
        output=[
            model_config_pb2.ModelOutput(
                name=t.name, data_type=kind(CONFIG_TYPES[t.datatype]), dims=t.shape
            )
            for t in meta.outputs
        ],
    )
    return service_pb2.ModelConfigResponse(config=config)


def model_stats(stats: Sequence[ModelStats]) -> Proto:
    """ModelStatisticsResponse."""
    return service_pb2.ModelStatisticsResponse(model_stats=[_model_stat(s) for s in stats])


def _model_stat(s: ModelStats) -> Proto:
    def duration(d: Duration) -> Proto:
        return service_pb2.StatisticDuration(count=d.count, ns=d.ns)

    infer = service_pb2.InferStatistics(
        success=duration(s.success), fail=duration(s.fail), queue=duration(s.queue),
        compute_input=duration(s.compute_input), compute_infer=duration(s.compute_infer),
        compute_output=duration(s.compute_output), cache_hit=duration(s.cache_hit),
    )  # fmt: skip
    return service_pb2.ModelStatistics(
        name=s.name,
        version=s.version,
        last_inference=s.last_inference_ms,
        inference_count=s.inference_count,
        execution_count=s.execution_count,
        inference_stats=infer,
    )


def shm_status(regions: Sequence[RegionStatus]) -> Proto:
    """SystemSharedMemoryStatusResponse."""
    response = service_pb2.SystemSharedMemoryStatusResponse()
    for r in regions:
        response.regions[r.name].CopyFrom(
            service_pb2.SystemSharedMemoryStatusResponse.RegionStatus(
                name=r.name, key=r.key, offset=r.offset, byte_size=r.byte_size
            )
        )
    return response


def repository_index(models: Sequence[str], version: str) -> Proto:
    """RepositoryIndexResponse listing `models`, each ready."""
    entry = service_pb2.RepositoryIndexResponse.ModelIndex
    return service_pb2.RepositoryIndexResponse(
        models=[entry(name=m, version=version, state="READY") for m in models]
    )

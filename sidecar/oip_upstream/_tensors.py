"""Mesh tensors and parameters to and from what tritonclient takes and gives (no I/O).

tritonclient reads and writes numpy arrays of every OIP datatype itself, BF16 as
`ml_dtypes.bfloat16` and BYTES as object arrays, as transport does; what is left here is
what the two sides disagree on: parameter values, and output arrays tritonclient cannot
build (a datatype the mesh does not carry).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import numpy.typing as npt

import transport
from transport import ErrorCode

from .._signature import TensorSpec, signature_params

Array = npt.NDArray[Any]
Scalar = bool | int | float | str

# Header parameters the mesh itself sets on a request: they are for the sidecars, not the
# model server, and are not forwarded.
MESH_PARAMS: Final = frozenset({"affinity"})


def request_parameters(params: Mapping[str, object]) -> dict[str, Scalar]:
    """The OIP request parameters of a mesh request's header parameters.

    OIP parameters are booleans, integers, floats and strings. Raises transport.RemoteError
    (INVALID_ARGUMENT) for any other value.
    """
    out: dict[str, Scalar] = {}
    for key, value in params.items():
        if key in MESH_PARAMS:
            continue
        if not isinstance(value, bool | int | float | str):
            raise transport.RemoteError(
                ErrorCode.INVALID_ARGUMENT,
                f"parameter {key!r} is a {type(value).__name__}; an Open Inference Protocol"
                " parameter is a bool, int, float or str",
            )
        out[key] = value
    return out


def mesh_output(name: str, datatype: str, array: Array | None) -> Array:
    """An output array as tritonclient decoded it, checked to be one the mesh can carry.

    Raises transport.RemoteError (INTERNAL) when the server answered a datatype the Open
    Inference Protocol does not define (tritonclient then gives None).
    """
    if array is None or datatype not in transport.DATATYPES:
        raise transport.RemoteError(
            ErrorCode.INTERNAL,
            f"the app answered output {name!r} of datatype {datatype!r}, which is not an"
            f" Open Inference Protocol datatype ({', '.join(transport.DATATYPES)})",
        )
    if datatype == "BYTES" and array.dtype != np.object_:
        return array.astype(np.object_)
    return array


def unreadable(url: str, exc: Exception) -> transport.RemoteError:
    """The error for an answer from the app that is not what OIP says (INTERNAL)."""
    return transport.RemoteError(
        ErrorCode.INTERNAL, f"the answer of the app at {url} cannot be read: {exc}"
    )


def signature_of(metadata: Mapping[str, Any]) -> dict[str, object]:
    """A mesh "metadata" reply's parameters (what `serve()` declares) from an OIP model
    metadata document: its inputs' and outputs' names, datatypes and shapes.

    Raises ValueError (or KeyError, TypeError) when the document is not one.
    """
    sides = []
    for side in ("inputs", "outputs"):
        sides.append(
            [
                TensorSpec(str(t["name"]), str(t["datatype"]), tuple(int(d) for d in t["shape"]))
                for t in metadata.get(side) or []
            ]
        )
    return signature_params(*sides)

"""Open Inference Protocol datatypes and their numpy equivalents.

BF16 uses `ml_dtypes.bfloat16`; BYTES is a numpy object array of `bytes` (the protocol's
variable-length byte strings). Every other type maps to a fixed-width numpy dtype.
"""

from __future__ import annotations

from typing import Final

import ml_dtypes
import numpy as np

from ._errors import FrameError

BYTES: Final = "BYTES"

_TO_NUMPY: Final[dict[str, np.dtype[np.generic]]] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BF16": np.dtype(ml_dtypes.bfloat16),
}
_FROM_NUMPY: Final[dict[np.dtype[np.generic], str]] = {v: k for k, v in _TO_NUMPY.items()}

DATATYPES: Final[tuple[str, ...]] = (*_TO_NUMPY, BYTES)


def numpy_dtype(datatype: str) -> np.dtype[np.generic]:
    """The numpy dtype of a fixed-width OIP datatype; raises FrameError for unknown names."""
    try:
        return _TO_NUMPY[datatype]
    except KeyError:
        raise FrameError(
            f"unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}"
        ) from None


def datatype_of(array: np.ndarray) -> str:
    """The OIP datatype name of a numpy array; raises FrameError if there is none."""
    dtype = array.dtype.newbyteorder("=") if array.dtype.byteorder == ">" else array.dtype
    found = _FROM_NUMPY.get(dtype)
    if found is not None:
        return found
    if dtype.kind in "OSU":
        return BYTES
    raise FrameError(
        f"numpy dtype {array.dtype} has no Open Inference Protocol datatype; "
        f"convert to one of {', '.join(DATATYPES)}"
    )

"""A model's declared signature: the tensors `serve()` says its handler takes and returns.

Sidecars read it with a "metadata" mesh request and report it as OIP model metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transport import DATATYPES


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output: name, OIP datatype and shape (-1: any size in that dimension).

    Raises ValueError on an unknown datatype or a dimension below -1.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"tensor name {self.name!r} must be a non-empty string")
        if self.datatype not in DATATYPES:
            raise ValueError(
                f"tensor {self.name!r}: datatype {self.datatype!r} is not one of "
                f"{', '.join(DATATYPES)}"
            )
        if not all(type(d) is int and d >= -1 for d in self.shape):
            raise ValueError(f"tensor {self.name!r}: shape {self.shape} must be integers >= -1")

    def to_wire(self) -> list[object]:
        """The msgpack-able form a replica sends in its metadata reply."""
        return [self.name, self.datatype, list(self.shape)]


def signature_params(
    inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> dict[str, object]:
    """The parameters of a metadata reply declaring `inputs` and `outputs`."""
    return {"inputs": [t.to_wire() for t in inputs], "outputs": [t.to_wire() for t in outputs]}

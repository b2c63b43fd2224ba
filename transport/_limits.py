"""Limits a link enforces on what it accepts and how it cuts what it sends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

KiB: Final = 1024
MiB: Final = 1024 * KiB
GiB: Final = 1024 * MiB


@dataclass(frozen=True, slots=True)
class Limits:
    """Sizes in bytes; each has an `ARROWMESH_` setting of the same name upper-cased.

    Raises ValueError on a limit that cannot work.
    """

    max_message_size: int = 4 * GiB
    max_header_size: int = 1 * MiB
    max_tensors: int = 1024
    max_rank: int = 32
    inline_threshold: int = 64 * KiB
    chunk_size: int = 1 * MiB
    max_concurrent_streams: int = 1024

    def __post_init__(self) -> None:
        for name in (
            "max_message_size",
            "max_header_size",
            "max_tensors",
            "max_rank",
            "chunk_size",
            "max_concurrent_streams",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be positive")
        if self.inline_threshold < 0:
            raise ValueError(f"inline_threshold={self.inline_threshold} must be >= 0")
        if self.max_header_size < 4 * KiB:
            raise ValueError(f"max_header_size={self.max_header_size} must be at least 4096")
        if self.inline_threshold >= self.max_header_size:
            raise ValueError(
                f"inline_threshold={self.inline_threshold} must be below "
                f"max_header_size={self.max_header_size}: inline tensors travel in the header"
            )

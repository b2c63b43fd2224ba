"""Sizes and durations: parsing them from the command line, formatting them for people."""

from __future__ import annotations

import re
from typing import Final

KiB: Final = 1024
MiB: Final = 1024 * KiB
GiB: Final = 1024 * MiB

_UNITS: Final = {"": 1, "b": 1, "k": KiB, "kib": KiB, "m": MiB, "mib": MiB, "g": GiB, "gib": GiB}
_SIZE: Final = re.compile(r"\s*(\d+)\s*([a-z]*)\s*")


def parse_size(text: str) -> int:
    """Bytes for "4096", "4KiB", "64M" or "1g" (binary units). Raises ValueError."""
    match = _SIZE.fullmatch(text.lower())
    if match is None or match.group(2) not in _UNITS:
        raise ValueError(f"size {text!r} is not a number with an optional unit (KiB, MiB, GiB)")
    size = int(match.group(1)) * _UNITS[match.group(2)]
    if size <= 0:
        raise ValueError(f"size {text!r} must be positive")
    return size


def parse_sizes(text: str) -> tuple[int, ...]:
    """Sorted distinct sizes from a comma-separated list. Raises ValueError."""
    sizes = {parse_size(part) for part in text.split(",") if part.strip()}
    if not sizes:
        raise ValueError(f"no sizes in {text!r}")
    return tuple(sorted(sizes))


def format_size(size: int) -> str:
    """ "4 KiB", "64 MiB", "1000 B": the largest binary unit that divides `size` exactly."""
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} B"


def format_seconds(seconds: float) -> str:
    """ "38.4 µs", "1.25 ms", "2.20 s"."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"

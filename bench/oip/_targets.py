"""The targets of issue 8, judged on p50s measured in one interleaved run: pure functions.

- the sidecar hop (tritonclient → sidecar → Triton against tritonclient → Triton, same
  protocol, tensors inline) adds ≤ 0.3 ms p50 at 4 KiB;
- tritonclient → sidecar → serve() takes ≤ 0.5x the p50 of tritonclient → Triton at 4 KiB;
- at 64 MiB with the system shm extension, tritonclient → sidecar → serve() is ≥ 3x faster
  than Triton's own system-shm path (same protocol) and ≥ 20x faster than plain gRPC to
  Triton (tensors inline).
Each protocol is judged on its own. A target whose cells were not measured is skipped,
with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from bench._units import KiB, MiB, format_seconds

from ._paths import PROTOCOLS, OipPath, Protocol

SMALL: Final = 4 * KiB
LARGE: Final = 64 * MiB
HOP_ADDED_S: Final = 0.3e-3
SERVE_OVER_TRITON: Final = 0.5
SHM_SPEEDUP: Final = 3.0
GRPC_SPEEDUP: Final = 20.0
_NAMES: Final = {"http": "HTTP", "grpc": "gRPC"}

Median = Callable[[OipPath, int], float | None]
Skipped = Mapping[tuple[OipPath, int], str]  # cells left out, with why
Target = dict[str, object]


def judge(median: Median, skipped: Skipped) -> list[Target]:
    """Every target, per protocol, as JSON-ready objects: target, met, detail (and the
    figures: measured, bound; or skipped, the reason)."""
    targets: list[Target] = []
    for protocol in PROTOCOLS:
        targets.append(_hop(protocol, median, skipped))
        targets.append(_serve_small(protocol, median, skipped))
    for protocol in PROTOCOLS:
        targets.append(_shm_large(protocol, median, skipped))
        targets.append(_grpc_large(protocol, median, skipped))
    return targets


def _hop(protocol: Protocol, median: Median, skipped: Skipped) -> Target:
    name = f"{_NAMES[protocol]}: the sidecar hop adds ≤ {HOP_ADDED_S * 1e3:g} ms p50 at 4 KiB"
    hop, direct = OipPath(protocol, "sidecar-triton", False), OipPath(protocol, "triton", False)
    figures = _medians(median, skipped, (hop, SMALL), (direct, SMALL))
    if isinstance(figures, str):
        return _skipped(name, figures)
    through, straight = figures
    added = through - straight
    detail = (
        f"{format_seconds(through)} through the sidecar against {format_seconds(straight)} "
        f"to Triton directly: {_signed(added)} ({through / straight:.2f}x)"
    )
    return _verdict(name, added <= HOP_ADDED_S, detail, added, HOP_ADDED_S)


def _serve_small(protocol: Protocol, median: Median, skipped: Skipped) -> Target:
    name = (
        f"{_NAMES[protocol]}: sidecar → serve() takes ≤ {SERVE_OVER_TRITON:g}x the p50 of "
        "Triton at 4 KiB"
    )
    ours, triton = OipPath(protocol, "sidecar-serve", False), OipPath(protocol, "triton", False)
    figures = _medians(median, skipped, (ours, SMALL), (triton, SMALL))
    if isinstance(figures, str):
        return _skipped(name, figures)
    mine, theirs = figures
    ratio = mine / theirs
    detail = f"{format_seconds(mine)} against Triton's {format_seconds(theirs)}: {ratio:.2f}x"
    return _verdict(name, ratio <= SERVE_OVER_TRITON, detail, ratio, SERVE_OVER_TRITON)


def _shm_large(protocol: Protocol, median: Median, skipped: Skipped) -> Target:
    name = (
        f"{_NAMES[protocol]}, system shm, 64 MiB: sidecar → serve() ≥ {SHM_SPEEDUP:g}x faster "
        "than Triton's system-shm path"
    )
    ours, triton = OipPath(protocol, "sidecar-serve", True), OipPath(protocol, "triton", True)
    return _speedup(name, median, skipped, ours, triton, SHM_SPEEDUP, "Triton's system shm")


def _grpc_large(protocol: Protocol, median: Median, skipped: Skipped) -> Target:
    name = (
        f"{_NAMES[protocol]}, system shm, 64 MiB: sidecar → serve() ≥ {GRPC_SPEEDUP:g}x faster "
        "than plain gRPC to Triton"
    )
    ours, grpc = OipPath(protocol, "sidecar-serve", True), OipPath("grpc", "triton", False)
    return _speedup(name, median, skipped, ours, grpc, GRPC_SPEEDUP, "plain gRPC to Triton")


def _speedup(
    name: str,
    median: Median,
    skipped: Skipped,
    ours: OipPath,
    theirs: OipPath,
    bound: float,
    what: str,
) -> Target:
    figures = _medians(median, skipped, (ours, LARGE), (theirs, LARGE))
    if isinstance(figures, str):
        return _skipped(name, figures)
    mine, other = figures
    speedup = other / mine
    detail = f"{format_seconds(mine)} against {what}'s {format_seconds(other)}: {speedup:.1f}x"
    return _verdict(name, speedup >= bound, detail, speedup, bound)


def _medians(
    median: Median, skipped: Skipped, *cells: tuple[OipPath, int]
) -> tuple[float, float] | str:
    """The two cells' p50s, or why one is missing."""
    found = []
    for path, size in cells:
        if (path, size) in skipped:
            return f"{path.label}: {skipped[path, size]}"
        value = median(path, size)
        if value is None:
            return f"{path.label} was not measured at this size"
        found.append(value)
    return found[0], found[1]


def _verdict(name: str, met: bool, detail: str, measured: float, bound: float) -> Target:
    return {"target": name, "met": met, "detail": detail, "measured": measured, "bound": bound}


def _skipped(name: str, why: str) -> Target:
    return {"target": name, "met": False, "skipped": why, "detail": f"skipped: {why}"}


def _signed(seconds: float) -> str:
    return ("+" if seconds >= 0 else "-") + format_seconds(abs(seconds))

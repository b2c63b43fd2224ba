"""The paths `bench oip` measures: which server a tritonclient talks to, over which
protocol, with or without the system shared-memory extension."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Protocol = Literal["http", "grpc"]
Route = Literal["triton", "sidecar-triton", "sidecar-serve"]

PROTOCOLS: Final[tuple[Protocol, ...]] = ("http", "grpc")
ROUTES: Final[tuple[Route, ...]] = ("triton", "sidecar-triton", "sidecar-serve")
TRITON_ROUTES: Final[frozenset[Route]] = frozenset({"triton", "sidecar-triton"})

_PROTOCOL_NAMES: Final = {"http": "HTTP", "grpc": "gRPC"}
_ROUTE_NAMES: Final = {
    "triton": "Triton",
    "sidecar-triton": "sidecar → Triton",
    "sidecar-serve": "sidecar → serve()",
}


@dataclass(frozen=True, slots=True)
class OipPath:
    """tritonclient.`protocol` → `route`, its tensors inline or in system shared memory."""

    protocol: Protocol
    route: Route
    shm: bool

    @property
    def key(self) -> str:
        """A stable identifier: "grpc/sidecar-serve/shm"."""
        return f"{self.protocol}/{self.route}/{'shm' if self.shm else 'inline'}"

    @property
    def label(self) -> str:
        """For people: "gRPC → sidecar → serve(), system shm"."""
        shm = ", system shm" if self.shm else ""
        return f"{_PROTOCOL_NAMES[self.protocol]} → {_ROUTE_NAMES[self.route]}{shm}"

    @property
    def needs_triton(self) -> bool:
        """Whether the path ends at the real Triton."""
        return self.route in TRITON_ROUTES


def every_path() -> tuple[OipPath, ...]:
    """Every path, in the order of the report: by protocol, then inline before shm."""
    return tuple(
        OipPath(protocol, route, shm)
        for protocol in PROTOCOLS
        for shm in (False, True)
        for route in ROUTES
    )

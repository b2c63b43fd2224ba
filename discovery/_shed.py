"""Load shedding: a replica's sidecar admits requests up to a queue limit, then rejects.

A rejected request was never run, so the caller may retry it anywhere, even if it is not
idempotent; the rejection says when to come back. The retry-after is the time the queue
needs to drain below the limit, from the recent service time:

    retry_after = service_time * (in_flight - queue_limit + 1) / concurrency

clamped to [`min_retry_after`, `max_retry_after`]. `service_time` is an EWMA of the
latencies of completed requests with time constant `decay`; `concurrency` is how many
requests the app runs at once (its advertised capacity). `in_flight` is also what the
sidecar reports to callers as its queue depth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._checks import check_at_least, check_seconds


@dataclass(frozen=True, slots=True)
class ShedPolicy:
    """Settings of admission control; raises ValueError on a bad value."""

    queue_limit: int = 64
    """Requests admitted at once, running or queued; more are rejected."""
    concurrency: int = 1
    """Requests the app runs at once (its advertised capacity)."""
    min_retry_after: float = 0.005
    """Shortest retry-after sent, in seconds."""
    max_retry_after: float = 5.0
    """Longest retry-after sent, in seconds."""
    decay: float = 1.0
    """Time constant of the service-time average, in seconds."""

    def __post_init__(self) -> None:
        check_at_least("queue_limit", self.queue_limit, 1)
        check_at_least("concurrency", self.concurrency, 1)
        check_seconds("min_retry_after", self.min_retry_after, zero=True)
        check_seconds("max_retry_after", self.max_retry_after, zero=True)
        if self.max_retry_after < self.min_retry_after:
            raise ValueError(
                f"max_retry_after={self.max_retry_after} must be at least"
                f" min_retry_after={self.min_retry_after}"
            )
        check_seconds("decay", self.decay)


@dataclass(frozen=True, slots=True)
class Admit:
    """Run the request; it is number `in_flight` in the queue."""

    in_flight: int


@dataclass(frozen=True, slots=True)
class Reject:
    """Shed the request: answer "overloaded", come back after `retry_after` seconds."""

    retry_after: float
    in_flight: int
    queue_limit: int

    @property
    def message(self) -> str:
        """What the rejection tells the caller."""
        return (
            f"overloaded: {self.in_flight} requests in flight, at queue_limit="
            f"{self.queue_limit}; retry after {self.retry_after:.3f} s, on another replica if"
            " there is one"
        )


class Shedder:
    """Admission control for one replica."""

    __slots__ = ("_service_time", "_stamp", "in_flight", "policy")

    def __init__(self, policy: ShedPolicy | None = None) -> None:
        self.policy = policy or ShedPolicy()
        self.in_flight = 0
        self._service_time: float | None = None
        self._stamp = -math.inf

    @property
    def service_time(self) -> float | None:
        """The recent average latency of completed requests, in seconds (None: none yet)."""
        return self._service_time

    def admit(self, now: float) -> Admit | Reject:
        """Admit a request (then call `done` when it ends) or reject it."""
        policy = self.policy
        if self.in_flight < policy.queue_limit:
            self.in_flight += 1
            return Admit(self.in_flight)
        excess = self.in_flight - policy.queue_limit + 1
        wait = (self._service_time or 0.0) * excess / policy.concurrency
        retry_after = min(max(wait, policy.min_retry_after), policy.max_retry_after)
        return Reject(retry_after, self.in_flight, policy.queue_limit)

    def done(self, latency: float, now: float) -> None:
        """An admitted request ended after `latency` seconds.

        Raises ValueError for a negative latency or a `done` without an `admit`.
        """
        if not (latency >= 0 and math.isfinite(latency)):
            raise ValueError(f"latency={latency} must be a finite number of seconds >= 0")
        if self.in_flight == 0:
            raise ValueError("done() without an admitted request in flight")
        self.in_flight -= 1
        if self._service_time is None:
            self._service_time = latency
        else:
            w = math.exp(-max(now - self._stamp, 0.0) / self.policy.decay)
            self._service_time = self._service_time * w + latency * (1.0 - w)
        self._stamp = now

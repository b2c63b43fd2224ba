"""Load shedding at a replica (serve() or the sidecar fronting an app): over the queue
limit, a request is answered at once with a retryable "overloaded" error that carries a
retry-after, instead of queueing without bound. Callers' routers treat it as a load
signal (they retry elsewhere, and do not eject the endpoint)."""

from __future__ import annotations

import re
import time
from typing import Final

import transport
from discovery import Reject, Shedder, ShedPolicy
from transport import ErrorCode

from ._settings import Settings

OVERLOADED: Final = "overloaded"
_RETRY_AFTER = re.compile(r"retry-after=([0-9.]+)s")


class Admission:
    """Admits requests up to `queue_limit` at once (0: no limit)."""

    def __init__(self, queue_limit: int, concurrency: int = 1) -> None:
        self._shedder = (
            Shedder(ShedPolicy(queue_limit=queue_limit, concurrency=max(concurrency, 1)))
            if queue_limit > 0
            else None
        )

    @property
    def in_flight(self) -> int:
        """Requests admitted and not finished."""
        return 0 if self._shedder is None else self._shedder.in_flight

    def report(self) -> dict[str, object]:
        """What a reply tells callers of this replica's load (mesh-wide balancing):
        {"load": [requests in progress, queue limit]}; nothing when there is no limit."""
        if self._shedder is None:
            return {}
        return {"load": [self._shedder.in_flight, self._shedder.policy.queue_limit]}

    def enter(self) -> float:
        """Admit a request (returns its start time) or raise transport.RemoteError overloaded."""
        now = time.monotonic()
        if self._shedder is not None:
            decision = self._shedder.admit(now)
            if isinstance(decision, Reject):
                raise transport.RemoteError(
                    ErrorCode.RESOURCE_EXHAUSTED,
                    f"{OVERLOADED}: {decision.in_flight} requests in progress, queue limit"
                    f" {decision.queue_limit}; retry-after={decision.retry_after:.3f}s",
                )
        return now

    def leave(self, started: float) -> None:
        """The admitted request that entered at `started` has finished."""
        if self._shedder is not None:
            now = time.monotonic()
            self._shedder.done(max(now - started, 0.0), now)


def took(started: float, method: str) -> dict[str, object]:
    """The `took` param of a reply to an inference (`method` "" or "infer"; a metadata
    reply's params are the signature): the seconds since `started` (perf_counter), from the
    request's arrival to its reply. Callers' balancers tell their own pauses from it."""
    if method not in ("", "infer"):
        return {}
    return {"took": round(time.perf_counter() - started, 7)}


def queue_limit_of(settings: Settings) -> int:
    """The queue limit of the app a sidecar fronts: the `services` entry of its own service
    wins over `queue_limit` (other services' entries are for their own sidecars)."""
    override = settings.services.get(settings.service or "")
    if override is not None and override.queue_limit is not None:
        return override.queue_limit
    return settings.queue_limit


def retry_after_of(message: str) -> float | None:
    """The retry-after an "overloaded" error message carries, if any."""
    match = _RETRY_AFTER.search(message)
    return float(match.group(1)) if match else None

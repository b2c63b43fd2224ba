"""Outlier detection: eject endpoints that fail, for a growing while, within a limit.

Passive: it learns only from the outcomes of real requests (`observe`). Two detectors, as
in Envoy: `consecutive_failures` in a row, and a failure rate of at least `failure_rate`
over `failure_rate_window` seconds once the window holds `failure_rate_min_requests`. An
ejected endpoint comes back after `base_ejection_time` * its ejection count (capped at
`max_ejection_time`), or at once on a successful active check (`checked`). The count drops
by one for every `base_ejection_time` the endpoint serves without being ejected.

Invariants: at most floor(`max_ejection_fraction` * cluster size) endpoints are ejected at
any time (an ejection that would pass it is skipped; a shrinking cluster returns the
endpoints due back soonest); an endpoint comes back with a clean record. What counts as a
failure is `Outcome`'s table: a shed request (OVERLOADED) is a load signal, never a failure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

from ._checks import check_at_least, check_fraction, check_seconds
from ._outcome import Outcome
from ._window import SlidingCounts

# What counts for and against an endpoint (the replica's own AppHealth counts the same).
FAILURES: Final = frozenset(
    {Outcome.CONNECT_FAILED, Outcome.UNAVAILABLE, Outcome.ERROR, Outcome.DEADLINE_EXCEEDED}
)
SUCCESSES: Final = frozenset({Outcome.OK, Outcome.BAD_REQUEST})


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    """Settings of outlier detection; raises ValueError on a bad value."""

    consecutive_failures: int | None = 5
    """Failures in a row that eject (Envoy's consecutive_5xx); None: off."""
    failure_rate: float | None = 0.5
    """Fraction of failures in the window that ejects; None: off."""
    failure_rate_window: float = 10.0
    """Seconds of history the failure rate covers."""
    failure_rate_min_requests: int = 20
    """Requests the window needs before its failure rate counts."""
    base_ejection_time: float = 30.0
    """Seconds of the first ejection; the n-th lasts n times as long."""
    max_ejection_time: float = 300.0
    """Longest ejection, in seconds."""
    max_ejection_fraction: float = 0.5
    """Most of the cluster that may be ejected at once (rounded down)."""

    def __post_init__(self) -> None:
        if self.consecutive_failures is not None:
            check_at_least("consecutive_failures", self.consecutive_failures, 1)
        if self.failure_rate is not None:
            check_fraction("failure_rate", self.failure_rate)
        check_seconds("failure_rate_window", self.failure_rate_window)
        check_at_least("failure_rate_min_requests", self.failure_rate_min_requests, 1)
        check_seconds("base_ejection_time", self.base_ejection_time)
        check_seconds("max_ejection_time", self.max_ejection_time)
        if self.max_ejection_time < self.base_ejection_time:
            raise ValueError(
                f"max_ejection_time={self.max_ejection_time} must be at least"
                f" base_ejection_time={self.base_ejection_time}"
            )
        check_fraction("max_ejection_fraction", self.max_ejection_fraction, zero=True)


@dataclass(frozen=True, slots=True)
class Ejection:
    """An endpoint was ejected (what the shell logs and counts)."""

    endpoint_id: str
    reason: Literal["consecutive failures", "failure rate"]
    until: float
    count: int
    """How many times in a row it has been ejected, counting this one."""


@dataclass(slots=True)
class _Record:
    window: SlidingCounts
    consecutive: int = 0
    ejections: int = 0
    until: float | None = None  # ejected until then
    returned_at: float = field(default=-math.inf)


class OutlierDetector:
    """Which endpoints of one cluster are ejected, learnt from request outcomes."""

    def __init__(self, policy: OutlierPolicy | None = None) -> None:
        self.policy = policy or OutlierPolicy()
        self._records: dict[str, _Record] = {}

    def update(self, endpoint_ids: Iterable[str], now: float) -> None:
        """The cluster is now these endpoints: others are forgotten, new ones start clean."""
        ids = set(endpoint_ids)
        self._records = {i: r for i, r in self._records.items() if i in ids}
        for endpoint_id in ids - self._records.keys():
            self._records[endpoint_id] = self._new_record()
        ejected = sorted(self._ejected_records(now), key=lambda r: r[1].until or 0.0)
        for _, record in ejected[: max(0, len(ejected) - self._max_ejected())]:
            self._bring_back(record, now)

    def observe(self, endpoint_id: str, outcome: Outcome, now: float) -> Ejection | None:
        """Learn how a request ended; the Ejection if this outcome ejected the endpoint."""
        record = self._record(endpoint_id)
        if self._is_ejected(record, now) or outcome not in FAILURES | SUCCESSES:
            return None
        if outcome in SUCCESSES:
            record.consecutive = 0
            record.window.add(now, a=1)
            return None
        record.consecutive += 1
        record.window.add(now, b=1)
        reason = self._reason(record, now)
        if reason is None or len(self.ejected(now)) >= self._max_ejected():
            return None
        return self._eject(endpoint_id, record, reason, now)

    def checked(self, endpoint_id: str, ok: bool, now: float) -> bool:
        """An active check of the endpoint ended; True if that brought it back."""
        record = self._records.get(endpoint_id)
        if record is None or not ok or not self._is_ejected(record, now):
            return False
        self._bring_back(record, now)
        return True

    def ejected(self, now: float) -> frozenset[str]:
        """The ids of the endpoints ejected at `now` (those due back come back)."""
        return frozenset(i for i, _ in self._ejected_records(now))

    def is_ejected(self, endpoint_id: str, now: float) -> bool:
        """True while the endpoint is ejected."""
        record = self._records.get(endpoint_id)
        return record is not None and self._is_ejected(record, now)

    def _reason(
        self, record: _Record, now: float
    ) -> Literal["consecutive failures", "failure rate"] | None:
        policy = self.policy
        if policy.consecutive_failures and record.consecutive >= policy.consecutive_failures:
            return "consecutive failures"
        if policy.failure_rate is not None:
            ok, failed = record.window.totals(now)
            enough = ok + failed >= policy.failure_rate_min_requests
            if enough and failed >= policy.failure_rate * (ok + failed):
                return "failure rate"
        return None

    def _eject(
        self,
        endpoint_id: str,
        record: _Record,
        reason: Literal["consecutive failures", "failure rate"],
        now: float,
    ) -> Ejection:
        base = self.policy.base_ejection_time
        served = int((now - record.returned_at) // base) if record.ejections else 0
        record.ejections = max(0, record.ejections - served) + 1
        record.until = now + min(base * record.ejections, self.policy.max_ejection_time)
        return Ejection(endpoint_id, reason, record.until, record.ejections)

    def _bring_back(self, record: _Record, now: float) -> None:
        record.until = None
        record.returned_at = now
        record.consecutive = 0
        record.window.clear()

    def _is_ejected(self, record: _Record, now: float) -> bool:
        if record.until is None:
            return False
        if record.until <= now:
            self._bring_back(record, record.until)
            return False
        return True

    def _ejected_records(self, now: float) -> list[tuple[str, _Record]]:
        return [(i, r) for i, r in self._records.items() if self._is_ejected(r, now)]

    def _max_ejected(self) -> int:
        return math.floor(self.policy.max_ejection_fraction * len(self._records) + 1e-9)

    def _record(self, endpoint_id: str) -> _Record:
        record = self._records.get(endpoint_id)
        if record is None:
            record = self._records[endpoint_id] = self._new_record()
        return record

    def _new_record(self) -> _Record:
        return _Record(SlidingCounts(self.policy.failure_rate_window))

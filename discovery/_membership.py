"""Membership: the sans-IO core of a cluster's endpoint set.

Merges what the registry says (snapshots, outages) with what active probes find. The
invariants: an outage never empties the set (the last good snapshot stays in use, marked
stale); an endpoint failing `probe_failures` probes in a row is left out until one probe
succeeds or the registry announces it anew; `version` moves exactly when `endpoints` or
`stale` change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._endpoint import Endpoint
from ._registry import Outage, Snapshot, WatchEvent


@dataclass(slots=True)
class Membership:
    """One service's endpoints: registry view ∩ probe view, with last-known-good."""

    probe_failures: int = 2
    version: int = 0
    received: bool = False  # any event yet (a snapshot, or an outage before any snapshot)
    stale_reason: str = ""
    stale_since: float | None = None
    rejected: int = 0
    _registered: tuple[Endpoint, ...] = ()
    _failures: dict[str, int] = field(default_factory=dict)
    _endpoints: tuple[Endpoint, ...] = ()

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The endpoints to route to, sorted by id."""
        return self._endpoints

    @property
    def registered(self) -> tuple[Endpoint, ...]:
        """What the registry last said, before probes."""
        return self._registered

    @property
    def stale(self) -> bool:
        """True while the registry is unreachable and the last good set is served."""
        return self.stale_since is not None

    def apply(self, event: WatchEvent, now: float) -> bool:
        """Take a watch event; True if the routable set or the stale flag changed."""
        before = (self._endpoints, self.stale)
        self.received = True
        if isinstance(event, Outage):
            if self.stale_since is None:
                self.stale_since = now
            self.stale_reason = event.reason
        elif isinstance(event, Snapshot):
            self.stale_since, self.stale_reason = None, ""
            self.rejected = event.rejected
            known = {e.id: e for e in self._registered}
            self._registered = event.endpoints
            ids = {e.id for e in event.endpoints}
            # A re-announced or changed endpoint starts with a clean probe record.
            self._failures = {
                i: n
                for i, n in self._failures.items()
                if i in ids and known.get(i) in event.endpoints
            }
        return self._recompute(before)

    def probed(self, endpoint_id: str, ok: bool) -> bool:
        """Take a probe result; True if the routable set changed."""
        if endpoint_id not in {e.id for e in self._registered}:
            return False
        before = (self._endpoints, self.stale)
        if ok:
            self._failures.pop(endpoint_id, None)
        else:
            self._failures[endpoint_id] = self._failures.get(endpoint_id, 0) + 1
        return self._recompute(before)

    def _recompute(self, before: tuple[tuple[Endpoint, ...], bool]) -> bool:
        self._endpoints = tuple(
            e for e in self._registered if self._failures.get(e.id, 0) < self.probe_failures
        )
        if (self._endpoints, self.stale) == before:
            return False
        self.version += 1
        return True

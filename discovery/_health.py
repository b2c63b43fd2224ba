"""AppHealth: whether a replica's app serves, as the replica itself sees it.

A replica (serve(), or the sidecar in front of an app) answers callers' active checks
(PING) with it, so that an app which fails every request while its link still answers is
not let back early by every caller's check. It learns from the outcomes of the requests the
replica ran, in `Outcome`'s vocabulary and with the outlier detector's idea of a failure:
`failures` in a row make the app unhealthy, and it stays so until a request succeeds.

It never recovers on its own, on purpose: a caller's ejection ends after its ejection time,
a request is let through, and that request decides (outlier detection without active checks
works the same way). What it cannot see, slowness, is the balancer's business.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._checks import check_at_least
from ._outcome import Outcome
from ._outlier import FAILURES, SUCCESSES


@dataclass(frozen=True, slots=True)
class AppHealthPolicy:
    """When a replica calls its app unhealthy; raises ValueError on a bad value."""

    failures: int = 5
    """Failed requests in a row that make it unhealthy (the default ejects, too)."""

    def __post_init__(self) -> None:
        check_at_least("failures", self.failures, 1)


class AppHealth:
    """A replica's own verdict on its app, from the outcomes of the requests it ran."""

    __slots__ = ("_streak", "policy")

    def __init__(self, policy: AppHealthPolicy | None = None) -> None:
        self.policy = policy or AppHealthPolicy()
        self._streak = 0

    def observe(self, outcome: Outcome) -> None:
        """Learn how a request ended (shed and cancelled requests say nothing)."""
        if outcome in FAILURES:
            self._streak += 1
        elif outcome in SUCCESSES:
            self._streak = 0

    @property
    def healthy(self) -> bool:
        """False from `failures` failed requests in a row until one succeeds."""
        return self._streak < self.policy.failures

"""Retries: which outcomes to retry, when, and how many the cluster can afford.

Four decisions, made in this order for each failed try (`Retrier.decide`):

1. Is the outcome retryable (`retryable`, the table in `_outcome`)? A request that was never
   run (no connection; shed with OVERLOADED) may be retried even if it is not idempotent;
   one that may have run (UNAVAILABLE: draining, or the link broke mid-request) only if it
   is idempotent. Handler errors and expired deadlines are never retried.
2. Are tries left (`max_attempts`, counting the first)?
3. Back-off: "full jitter", uniform in [0, min(cap, base * 2^(retry - 1))] (AWS
   architecture blog, "Exponential Backoff And Jitter"); never less than a retry-after the
   endpoint sent with OVERLOADED. The try may start only if the caller's deadline leaves
   at least `min_try_time` after the back-off: no retry is ever started that the deadline
   would cut off at once.
4. The budget (Finagle's and Linkerd's retry budget): over the last `window` seconds,
   retries (and hedges) may number at most max(`min_retries_per_second` * window,
   `ratio` * first tries). Under a total outage, retries add at most `ratio` to the load
   instead of multiplying it by `max_attempts`; at low traffic the minimum rate still lets
   every request retry.

The budget is checked last, so only a retry that will be made draws on it.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass, field

from ._checks import check_at_least, check_fraction, check_seconds
from ._outcome import Outcome
from ._window import SlidingCounts


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """How many retries a cluster can afford; raises ValueError on a bad value."""

    ratio: float = 0.2
    """Retries allowed per first try, over the window."""
    min_retries_per_second: float = 10.0
    """Retries allowed per second whatever the traffic."""
    window: float = 10.0
    """Seconds of history the budget counts."""

    def __post_init__(self) -> None:
        check_fraction("ratio", self.ratio, zero=True)
        check_at_least("min_retries_per_second", self.min_retries_per_second, 0.0)
        check_seconds("window", self.window)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential back-off with full jitter; raises ValueError on a bad value."""

    base: float = 0.025
    """Seconds of the first retry's back-off range."""
    cap: float = 1.0
    """Longest back-off range, in seconds."""

    def __post_init__(self) -> None:
        check_seconds("base", self.base, zero=True)
        check_seconds("cap", self.cap, zero=True)
        if self.cap < self.base:
            raise ValueError(f"cap={self.cap} must be at least base={self.base}")

    def ceiling(self, retry: int) -> float:
        """The top of the `retry`-th retry's range (1 for the first retry)."""
        doublings = min(max(retry - 1, 0), 1023)  # 2.0**1024 overflows
        return min(self.cap, self.base * 2.0**doublings)

    def delay(self, retry: int, rng: random.Random) -> float:
        """The back-off before the `retry`-th retry, in seconds."""
        return rng.uniform(0.0, self.ceiling(retry))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a failed try is tried again; raises ValueError on a bad value."""

    max_attempts: int = 3
    """Tries per request, counting the first."""
    backoff: Backoff = field(default_factory=Backoff)
    budget: RetryBudget = field(default_factory=RetryBudget)
    min_try_time: float = 0.005
    """Seconds a try needs before the deadline for it to be worth starting."""

    def __post_init__(self) -> None:
        check_at_least("max_attempts", self.max_attempts, 1)
        check_seconds("min_try_time", self.min_try_time, zero=True)


class GiveUp(enum.Enum):
    """Why a failed try is not retried."""

    NOT_RETRYABLE = "the outcome is not retryable"
    NOT_IDEMPOTENT = "the request may have run and is not idempotent"
    ATTEMPTS = "no attempts left"
    DEADLINE = "the deadline leaves no time for another try"
    BUDGET = "the retry budget is spent"


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again after `delay` seconds; this will be try number `attempt`."""

    delay: float
    attempt: int


_NEVER_RUN = frozenset({Outcome.CONNECT_FAILED, Outcome.OVERLOADED})
_MAYBE_RUN = frozenset({Outcome.UNAVAILABLE})


def retryable(outcome: Outcome, idempotent: bool) -> GiveUp | None:
    """None if a try that ended so may be retried; else why not."""
    if outcome in _NEVER_RUN:
        return None
    if outcome in _MAYBE_RUN:
        return None if idempotent else GiveUp.NOT_IDEMPOTENT
    return GiveUp.NOT_RETRYABLE


def time_left(deadline: float | None, now: float) -> float:
    """Seconds left until `deadline` (infinite without one; negative once past)."""
    return math.inf if deadline is None else deadline - now


class RetryAccount:
    """The retry budget's ledger: first tries and retries over a sliding window."""

    __slots__ = ("_counts", "budget")

    def __init__(self, budget: RetryBudget) -> None:
        self.budget = budget
        self._counts = SlidingCounts(budget.window)

    def deposit(self, now: float) -> None:
        """A request's first try went out."""
        self._counts.add(now, a=1)

    def withdraw(self, now: float) -> bool:
        """True, and the retry (or hedge) counted, if the budget allows one more."""
        requests, retries = self._counts.totals(now)
        if retries + 1 > self.allowance(requests):
            return False
        self._counts.add(now, b=1)
        return True

    def allowance(self, requests: int) -> float:
        """Retries the window allows with `requests` first tries in it."""
        budget = self.budget
        return max(budget.min_retries_per_second * budget.window, budget.ratio * requests)

    def totals(self, now: float) -> tuple[int, int]:
        """First tries and retries in the window ending at `now`."""
        return self._counts.totals(now)


class Retrier:
    """One cluster's retry decisions, drawing on one budget (hedges draw on it too)."""

    def __init__(self, rng: random.Random, policy: RetryPolicy | None = None) -> None:
        self.policy = policy or RetryPolicy()
        self.account = RetryAccount(self.policy.budget)
        self._rng = rng

    def begin(self, now: float, deadline: float | None = None) -> bool:
        """A request is about to make its first try; False if its deadline leaves no time."""
        if time_left(deadline, now) < self.policy.min_try_time:
            return False
        self.account.deposit(now)
        return True

    def decide(
        self,
        attempt: int,
        outcome: Outcome,
        now: float,
        *,
        idempotent: bool,
        deadline: float | None = None,
        retry_after: float | None = None,
    ) -> Retry | GiveUp:
        """After try number `attempt` ended with `outcome`: retry (after a delay) or not."""
        why = retryable(outcome, idempotent)
        if why is not None:
            return why
        if attempt >= self.policy.max_attempts:
            return GiveUp.ATTEMPTS
        delay = self.policy.backoff.delay(attempt, self._rng)
        if retry_after is not None and outcome is Outcome.OVERLOADED:
            delay = max(delay, retry_after)
        if time_left(deadline, now) < delay + self.policy.min_try_time:
            return GiveUp.DEADLINE
        if not self.account.withdraw(now):
            return GiveUp.BUDGET
        return Retry(delay, attempt + 1)

    def allow_hedge(self, now: float, deadline: float | None = None) -> bool:
        """True, and the hedge counted against the budget, if a hedge may go out now."""
        if time_left(deadline, now) < self.policy.min_try_time:
            return False
        return self.account.withdraw(now)

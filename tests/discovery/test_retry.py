"""Retries: what is retried, back-off, deadlines, and a budget that holds under an outage."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discovery._outcome import Outcome
from discovery._retry import (
    Backoff,
    GiveUp,
    Retrier,
    Retry,
    RetryAccount,
    RetryBudget,
    RetryPolicy,
    retryable,
    time_left,
)

CI = settings(deadline=None, max_examples=200, derandomize=True)

UNLIMITED = RetryBudget(ratio=1.0, min_retries_per_second=1e6)


def retrier(seed: int = 0, **policy: object) -> Retrier:
    return Retrier(random.Random(seed), RetryPolicy(**policy))  # type: ignore[arg-type]


# --- what is retried -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "idempotent", "expected"),
    [
        (Outcome.CONNECT_FAILED, False, None),  # nothing was sent
        (Outcome.CONNECT_FAILED, True, None),
        (Outcome.OVERLOADED, False, None),  # shed before it ran
        (Outcome.OVERLOADED, True, None),
        (Outcome.UNAVAILABLE, True, None),
        (Outcome.UNAVAILABLE, False, GiveUp.NOT_IDEMPOTENT),  # it may have run
        (Outcome.ERROR, True, GiveUp.NOT_RETRYABLE),
        (Outcome.DEADLINE_EXCEEDED, True, GiveUp.NOT_RETRYABLE),
        (Outcome.BAD_REQUEST, True, GiveUp.NOT_RETRYABLE),
        (Outcome.CANCELLED, True, GiveUp.NOT_RETRYABLE),
        (Outcome.OK, True, GiveUp.NOT_RETRYABLE),
    ],
)
def test_which_outcomes_are_retried(
    outcome: Outcome, idempotent: bool, expected: GiveUp | None
) -> None:
    assert retryable(outcome, idempotent) is expected
    decision = retrier().decide(1, outcome, 0.0, idempotent=idempotent)
    assert decision == expected if expected else isinstance(decision, Retry)


def test_no_retry_once_the_attempts_are_used() -> None:
    r = retrier(max_attempts=3)
    first = r.decide(1, Outcome.CONNECT_FAILED, 0.0, idempotent=True)
    second = r.decide(2, Outcome.CONNECT_FAILED, 0.0, idempotent=True)
    assert isinstance(first, Retry) and first.attempt == 2
    assert isinstance(second, Retry) and second.attempt == 3
    assert r.decide(3, Outcome.CONNECT_FAILED, 0.0, idempotent=True) is GiveUp.ATTEMPTS
    assert retrier(max_attempts=1).decide(1, Outcome.OVERLOADED, 0.0, idempotent=True) is (
        GiveUp.ATTEMPTS
    )


# --- back-off --------------------------------------------------------------------------


@CI
@given(
    base=st.floats(0, 1),
    extra=st.floats(0, 10),
    retry=st.integers(1, 200),
    seed=st.integers(0, 2**32),
)
def test_backoff_is_full_jitter_under_an_exponential_ceiling_and_the_cap(
    base: float, extra: float, retry: int, seed: int
) -> None:
    b = Backoff(base=base, cap=base + extra)
    ceiling = b.ceiling(retry)
    assert ceiling == min(b.cap, base * 2.0 ** (retry - 1))
    assert 0.0 <= b.delay(retry, random.Random(seed)) <= ceiling


def test_backoff_spreads_delays_over_the_whole_range() -> None:
    rng = random.Random(0)
    b = Backoff(base=0.1, cap=10.0)
    delays = [b.delay(3, rng) for _ in range(2000)]  # range [0, 0.4]
    assert min(delays) < 0.02 and max(delays) > 0.38
    assert sum(delays) / len(delays) == pytest.approx(0.2, abs=0.01)


def test_the_back_off_grows_with_each_retry() -> None:
    r = retrier(max_attempts=10, backoff=Backoff(base=0.01, cap=100.0), budget=UNLIMITED, seed=1)
    means = []
    for attempt in (1, 3, 6):
        delays = []
        for _ in range(300):
            d = r.decide(attempt, Outcome.CONNECT_FAILED, 0.0, idempotent=True)
            assert isinstance(d, Retry)
            delays.append(d.delay)
        means.append(sum(delays) / len(delays))
    assert means[0] < means[1] < means[2]


def test_a_retry_after_is_honoured_as_the_least_delay_for_an_overloaded_endpoint() -> None:
    r = retrier(backoff=Backoff(base=0.001, cap=0.001))
    d = r.decide(1, Outcome.OVERLOADED, 0.0, idempotent=False, retry_after=0.5)
    assert isinstance(d, Retry) and d.delay == 0.5


# --- deadlines -------------------------------------------------------------------------


def test_no_retry_when_the_deadline_leaves_less_than_the_back_off_plus_the_minimum() -> None:
    r = retrier(backoff=Backoff(base=0.0, cap=0.0), min_try_time=0.01)
    assert isinstance(
        r.decide(1, Outcome.CONNECT_FAILED, 0.0, idempotent=True, deadline=0.011), Retry
    )
    assert r.decide(1, Outcome.CONNECT_FAILED, 0.0, idempotent=True, deadline=0.009) is (
        GiveUp.DEADLINE
    )
    assert r.decide(1, Outcome.OVERLOADED, 0.0, idempotent=True, deadline=1.0, retry_after=2.0) is (
        GiveUp.DEADLINE
    )


@CI
@given(
    now=st.floats(0, 1e6),
    left=st.floats(-1, 5),
    retry_after=st.none() | st.floats(0, 5),
    attempt=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_no_retry_is_ever_scheduled_past_the_caller_s_deadline(
    now: float, left: float, retry_after: float | None, attempt: int, seed: int
) -> None:
    r = retrier(seed, max_attempts=5, budget=UNLIMITED, backoff=Backoff(base=0.1, cap=2.0))
    deadline = now + left
    d = r.decide(
        attempt,
        Outcome.OVERLOADED,
        now,
        idempotent=True,
        deadline=deadline,
        retry_after=retry_after,
    )
    if isinstance(d, Retry):
        assert now + d.delay + r.policy.min_try_time <= deadline
        assert retry_after is None or d.delay >= retry_after
    else:
        assert d is GiveUp.DEADLINE


def test_a_first_try_needs_the_minimum_time_before_the_deadline() -> None:
    r = retrier(min_try_time=0.01)
    assert r.begin(0.0, deadline=0.02)
    assert not r.begin(0.0, deadline=0.005)
    assert r.begin(0.0)
    assert r.account.totals(0.0) == (2, 0)


def test_time_left_is_infinite_without_a_deadline_and_negative_past_it() -> None:
    assert time_left(None, 5.0) == math.inf
    assert time_left(7.0, 5.0) == 2.0
    assert time_left(4.0, 5.0) == -1.0


# --- the budget ------------------------------------------------------------------------


def test_the_budget_allows_the_minimum_rate_whatever_the_traffic() -> None:
    account = RetryAccount(RetryBudget(ratio=0.2, min_retries_per_second=2.0, window=10.0))
    assert sum(account.withdraw(1.0) for _ in range(30)) == 20
    assert not account.withdraw(5.0)


def test_the_budget_allows_the_ratio_of_recent_first_tries_at_high_traffic() -> None:
    account = RetryAccount(RetryBudget(ratio=0.2, min_retries_per_second=1.0, window=10.0))
    for _ in range(1000):
        account.deposit(1.0)
    assert sum(account.withdraw(1.0) for _ in range(500)) == 200
    assert account.totals(1.0) == (1000, 200)


def test_the_budget_recovers_once_the_window_has_passed() -> None:
    account = RetryAccount(RetryBudget(ratio=0.0, min_retries_per_second=1.0, window=10.0))
    assert sum(account.withdraw(0.0) for _ in range(20)) == 10
    assert not account.withdraw(9.0)
    assert sum(account.withdraw(10.5) for _ in range(20)) == 10


def test_the_budget_caps_retries_under_a_total_outage() -> None:
    """100% failures at 200 requests a second for a minute: retries stay near 20%."""
    budget = RetryBudget(ratio=0.2, min_retries_per_second=1.0, window=10.0)
    r = retrier(max_attempts=5, budget=budget, backoff=Backoff(base=0.0, cap=0.0))
    first_tries = retries = 0
    now = 0.0
    for _ in range(12_000):
        now += 1 / 200
        assert r.begin(now)
        first_tries += 1
        attempt = 1
        while isinstance(d := r.decide(attempt, Outcome.UNAVAILABLE, now, idempotent=True), Retry):
            retries += 1
            attempt = d.attempt
        assert d in (GiveUp.BUDGET, GiveUp.ATTEMPTS)
    # Without a budget: 4 retries per request. With it: the ratio, give or take one window's
    # worth of the minimum rate and the slice the sliding window lets through early.
    assert retries <= 0.2 * first_tries + budget.min_retries_per_second * budget.window
    assert retries >= 0.19 * first_tries
    requests, spent = r.account.totals(now)
    assert spent <= r.account.allowance(requests)


@settings(deadline=None, max_examples=100, derandomize=True)
@given(
    ratio=st.floats(0, 1),
    minimum=st.floats(0, 20),
    steps=st.lists(st.tuples(st.floats(0, 2), st.integers(0, 30), st.integers(0, 30)), max_size=40),
)
def test_a_retry_is_allowed_exactly_while_the_window_s_allowance_has_room(
    ratio: float, minimum: float, steps: list[tuple[float, int, int]]
) -> None:
    account = RetryAccount(RetryBudget(ratio=ratio, min_retries_per_second=minimum, window=5.0))
    now = 0.0
    for step, deposits, withdrawals in steps:
        now += step
        for _ in range(deposits):
            account.deposit(now)
        for _ in range(withdrawals):
            requests, retries = account.totals(now)
            allowed = account.withdraw(now)
            assert allowed == (retries + 1 <= account.allowance(requests))
            assert account.totals(now) == (requests, retries + allowed)


def test_hedges_draw_on_the_retry_budget() -> None:
    r = retrier(budget=RetryBudget(ratio=0.1, min_retries_per_second=0.0, window=10.0))
    for _ in range(50):
        r.begin(0.0)
    assert sum(r.allow_hedge(0.0) for _ in range(10)) == 5
    assert r.decide(1, Outcome.CONNECT_FAILED, 0.0, idempotent=True) is GiveUp.BUDGET
    assert not r.allow_hedge(0.0, deadline=0.001)  # and never too close to the deadline


def test_only_a_retry_that_will_be_made_draws_on_the_budget() -> None:
    r = retrier(budget=RetryBudget(ratio=0.0, min_retries_per_second=0.1, window=10.0))
    assert r.decide(1, Outcome.ERROR, 0.0, idempotent=True) is GiveUp.NOT_RETRYABLE
    assert r.decide(1, Outcome.UNAVAILABLE, 0.0, idempotent=True, deadline=0.0) is GiveUp.DEADLINE
    assert isinstance(r.decide(1, Outcome.UNAVAILABLE, 0.0, idempotent=True), Retry)
    assert r.decide(1, Outcome.UNAVAILABLE, 0.0, idempotent=True) is GiveUp.BUDGET


# --- policies --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_policy", "message"),
    [
        (lambda: RetryBudget(ratio=-0.1), "ratio=-0.1"),
        (lambda: RetryBudget(ratio=2), "ratio=2"),
        (lambda: RetryBudget(min_retries_per_second=-1), "min_retries_per_second=-1"),
        (lambda: RetryBudget(window=0), "window=0"),
        (lambda: Backoff(base=-1), "base=-1"),
        (lambda: Backoff(cap=math.inf), "cap=inf"),
        (lambda: Backoff(base=2, cap=1), "cap=1 must be at least base=2"),
        (lambda: RetryPolicy(max_attempts=0), "max_attempts=0"),
        (lambda: RetryPolicy(min_try_time=-0.1), "min_try_time=-0.1"),
    ],
)
def test_policies_reject_values_that_cannot_work(
    make_policy: Callable[[], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_policy()

"""A replica's own verdict on its app: failures in a row make it unhealthy until a success."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from discovery import AppHealth, AppHealthPolicy, Outcome
from discovery._outlier import FAILURES, SUCCESSES


def test_failures_in_a_row_make_it_unhealthy_until_a_request_succeeds() -> None:
    health = AppHealth(AppHealthPolicy(failures=3))
    for _ in range(2):
        health.observe(Outcome.ERROR)
    assert health.healthy
    health.observe(Outcome.UNAVAILABLE)
    assert not health.healthy
    for _ in range(100):  # no time passes for a core: only a success brings it back
        health.observe(Outcome.CANCELLED)
    assert not health.healthy
    health.observe(Outcome.OK)
    assert health.healthy


def test_shed_and_cancelled_requests_say_nothing_and_bad_requests_count_as_served() -> None:
    health = AppHealth(AppHealthPolicy(failures=2))
    health.observe(Outcome.ERROR)
    health.observe(Outcome.OVERLOADED)
    health.observe(Outcome.CANCELLED)
    health.observe(Outcome.ERROR)
    assert not health.healthy  # two in a row: the others did not break the streak
    health.observe(Outcome.BAD_REQUEST)  # as the outlier detector takes it: it answered
    assert health.healthy


@given(st.lists(st.sampled_from(list(Outcome)), max_size=40))
def test_it_is_unhealthy_exactly_when_the_last_counted_outcomes_all_failed(
    outcomes: list[Outcome],
) -> None:
    health = AppHealth()
    for outcome in outcomes:
        health.observe(outcome)
    counted = [o for o in outcomes if o in FAILURES | SUCCESSES]
    tail = counted[-health.policy.failures :]
    failing = len(tail) == health.policy.failures and all(o in FAILURES for o in tail)
    assert health.healthy is not failing


def test_a_bad_policy_raises_value_error_naming_the_field() -> None:
    with pytest.raises(ValueError, match="failures=0"):
        AppHealthPolicy(failures=0)

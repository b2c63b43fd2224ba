"""Load shedding: admit up to the queue limit, then reject with a useful retry-after."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discovery._shed import Admit, Reject, Shedder, ShedPolicy


def test_requests_are_admitted_up_to_the_queue_limit_then_rejected() -> None:
    s = Shedder(ShedPolicy(queue_limit=3))
    assert [s.admit(0.0) for _ in range(3)] == [Admit(1), Admit(2), Admit(3)]
    rejected = s.admit(0.0)
    assert isinstance(rejected, Reject) and rejected.in_flight == 3
    assert s.in_flight == 3
    s.done(0.01, 0.01)
    assert s.admit(0.01) == Admit(3)


def test_the_retry_after_is_the_time_to_drain_below_the_limit() -> None:
    s = Shedder(ShedPolicy(queue_limit=4, concurrency=2, max_retry_after=10.0))
    s.admit(0.0)
    s.done(0.2, 0.0)  # service time 0.2 s
    for _ in range(4):
        s.admit(0.0)
    rejected = s.admit(0.0)
    assert isinstance(rejected, Reject)
    assert rejected.retry_after == pytest.approx(0.2 * 1 / 2)


def test_the_retry_after_grows_with_the_service_time() -> None:
    s = Shedder(ShedPolicy(queue_limit=1, decay=1.0, max_retry_after=10.0))
    s.admit(0.0)
    s.done(0.1, 0.0)
    s.admit(0.0)
    fast = s.admit(0.0)
    for t in range(1, 10):
        s.done(1.0, float(t))
        s.admit(float(t))
    slow = s.admit(10.0)
    assert isinstance(fast, Reject) and isinstance(slow, Reject)
    assert fast.retry_after == pytest.approx(0.1)
    assert slow.retry_after > 0.9


def test_the_retry_after_is_clamped() -> None:
    s = Shedder(ShedPolicy(queue_limit=1, min_retry_after=0.05, max_retry_after=2.0))
    s.admit(0.0)
    early = s.admit(0.0)  # no service time known yet
    assert isinstance(early, Reject) and early.retry_after == 0.05
    s.done(30.0, 30.0)
    s.admit(30.0)
    late = s.admit(30.0)
    assert isinstance(late, Reject) and late.retry_after == 2.0


def test_a_rejection_says_what_happened_and_what_to_do() -> None:
    s = Shedder(ShedPolicy(queue_limit=2))
    s.admit(0.0)
    s.admit(0.0)
    rejected = s.admit(0.0)
    assert isinstance(rejected, Reject)
    assert rejected.message == (
        "overloaded: 2 requests in flight, at queue_limit=2; retry after 0.005 s, on another"
        " replica if there is one"
    )


def test_done_without_admit_and_bad_latencies_raise_value_error() -> None:
    s = Shedder()
    with pytest.raises(ValueError, match="without an admitted request"):
        s.done(0.1, 0.0)
    s.admit(0.0)
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match="latency"):
            s.done(bad, 0.0)
    assert s.in_flight == 1


@settings(deadline=None, max_examples=200, derandomize=True)
@given(
    limit=st.integers(1, 8),
    ops=st.lists(st.tuples(st.booleans(), st.floats(0, 2)), max_size=100),
)
def test_in_flight_never_passes_the_limit_and_only_a_full_queue_rejects(
    limit: int, ops: list[tuple[bool, float]]
) -> None:
    policy = ShedPolicy(queue_limit=limit)
    s = Shedder(policy)
    now = 0.0
    for arrive, latency in ops:
        now += 0.01
        if arrive:
            before = s.in_flight
            decision = s.admit(now)
            assert isinstance(decision, Reject) == (before == limit)
            if isinstance(decision, Reject):
                assert policy.min_retry_after <= decision.retry_after <= policy.max_retry_after
        elif s.in_flight:
            s.done(latency, now)
        assert 0 <= s.in_flight <= limit
    if s.service_time is not None:
        assert 0 <= s.service_time <= 2


@pytest.mark.parametrize(
    ("make_policy", "message"),
    [
        (lambda: ShedPolicy(queue_limit=0), "queue_limit=0"),
        (lambda: ShedPolicy(concurrency=0), "concurrency=0"),
        (lambda: ShedPolicy(min_retry_after=-1), "min_retry_after=-1"),
        (lambda: ShedPolicy(min_retry_after=3, max_retry_after=2), "max_retry_after=2 must"),
        (lambda: ShedPolicy(decay=0), "decay=0"),
    ],
)
def test_policies_reject_values_that_cannot_work(
    make_policy: Callable[[], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_policy()

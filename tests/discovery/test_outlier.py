"""Outlier detection: what ejects, for how long, within what limit, and what brings back."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discovery._outcome import Outcome
from discovery._outlier import Ejection, OutlierDetector, OutlierPolicy

IDS = [f"e{i}" for i in range(10)]


def detector(n: int = 10, **policy: float | int | None) -> OutlierDetector:
    d = OutlierDetector(OutlierPolicy(**policy))  # type: ignore[arg-type]  # test shorthand
    d.update(IDS[:n], 0.0)
    return d


def fail(d: OutlierDetector, endpoint_id: str, times: int, now: float) -> list[Ejection]:
    found = [d.observe(endpoint_id, Outcome.ERROR, now) for _ in range(times)]
    return [e for e in found if e is not None]


def test_consecutive_failures_eject_at_the_threshold_and_not_before() -> None:
    d = detector(consecutive_failures=3, failure_rate=None)
    assert fail(d, "e0", 2, now=1.0) == []
    assert d.ejected(1.0) == frozenset()
    (ejection,) = fail(d, "e0", 1, now=1.0)
    assert ejection == Ejection("e0", "consecutive failures", until=31.0, count=1)
    assert d.ejected(1.0) == {"e0"} and d.is_ejected("e0", 30.9)


def test_a_success_resets_the_consecutive_count() -> None:
    d = detector(consecutive_failures=3, failure_rate=None)
    for _ in range(5):
        fail(d, "e0", 2, now=1.0)
        d.observe("e0", Outcome.OK, 1.0)
    assert d.ejected(1.0) == frozenset()


@pytest.mark.parametrize(
    "outcome",
    [Outcome.CONNECT_FAILED, Outcome.UNAVAILABLE, Outcome.ERROR, Outcome.DEADLINE_EXCEEDED],
)
def test_failures_of_every_kind_count(outcome: Outcome) -> None:
    d = detector(consecutive_failures=2, failure_rate=None)
    d.observe("e0", outcome, 0.0)
    assert d.observe("e0", outcome, 0.0) is not None


@pytest.mark.parametrize("outcome", [Outcome.OVERLOADED, Outcome.CANCELLED])
def test_shed_and_cancelled_tries_are_neither_failures_nor_successes(outcome: Outcome) -> None:
    d = detector(consecutive_failures=3, failure_rate=0.5, failure_rate_min_requests=4)
    for _ in range(100):
        assert d.observe("e0", outcome, 0.0) is None
    fail(d, "e0", 2, 0.0)
    d.observe("e0", outcome, 0.0)  # does not break the run of failures either
    assert fail(d, "e0", 1, 0.0) != []


def test_a_bad_request_is_an_answer_and_counts_as_a_success() -> None:
    d = detector(consecutive_failures=2, failure_rate=None)
    fail(d, "e0", 1, 0.0)
    d.observe("e0", Outcome.BAD_REQUEST, 0.0)
    assert fail(d, "e0", 1, 0.0) == []


def test_a_failure_rate_over_the_window_ejects_once_there_are_enough_requests() -> None:
    d = detector(
        consecutive_failures=None,
        failure_rate=0.5,
        failure_rate_window=10.0,
        failure_rate_min_requests=20,
    )
    now = 0.0
    ejections: list[Ejection] = []
    for i in range(19):  # alternate: 50% failures, but under 20 requests
        now += 0.1
        outcome = Outcome.ERROR if i % 2 else Outcome.OK
        found = d.observe("e0", outcome, now)
        ejections += [found] if found else []
    assert ejections == []
    found = d.observe("e0", Outcome.ERROR, now)
    assert found is not None and found.reason == "failure rate"


def test_the_failure_rate_forgets_requests_older_than_the_window() -> None:
    d = detector(
        consecutive_failures=None,
        failure_rate=0.5,
        failure_rate_window=10.0,
        failure_rate_min_requests=10,
    )
    for _ in range(9):
        d.observe("e0", Outcome.ERROR, 0.0)
    for _ in range(9):
        d.observe("e0", Outcome.OK, 20.0)
    assert d.observe("e0", Outcome.ERROR, 20.0) is None  # 1 of 10 in the window


def test_a_low_failure_rate_does_not_eject() -> None:
    d = detector(consecutive_failures=None, failure_rate=0.5, failure_rate_min_requests=10)
    rng = random.Random(0)
    for i in range(2000):
        outcome = Outcome.ERROR if rng.random() < 0.2 else Outcome.OK
        assert d.observe("e0", outcome, i * 0.01) is None


def test_ejection_time_grows_with_each_ejection_up_to_the_cap() -> None:
    d = detector(
        consecutive_failures=1, failure_rate=None, base_ejection_time=10, max_ejection_time=35
    )
    now, durations = 0.0, []
    for _ in range(5):
        (ejection,) = fail(d, "e0", 1, now)
        durations.append(ejection.until - now)
        now = ejection.until  # fails again the moment it is back
        assert not d.is_ejected("e0", now)
    assert durations == [10, 20, 30, 35, 35]


def test_the_ejection_count_drops_by_one_per_base_time_served_without_ejection() -> None:
    d = detector(consecutive_failures=1, failure_rate=None, base_ejection_time=10)
    (first,) = fail(d, "e0", 1, 0.0)
    (second,) = fail(d, "e0", 1, first.until)
    assert second.count == 2
    (third,) = fail(d, "e0", 1, second.until + 15)  # served 15 s: one step down, then up
    assert third.count == 2
    (fourth,) = fail(d, "e0", 1, third.until + 100)
    assert fourth.count == 1 and fourth.until - (third.until + 100) == 10


def test_an_ejected_endpoint_comes_back_when_its_time_is_up_with_a_clean_record() -> None:
    d = detector(consecutive_failures=3, failure_rate=None, base_ejection_time=30)
    fail(d, "e0", 3, 0.0)
    assert d.ejected(29.9) == {"e0"}
    assert d.ejected(30.0) == frozenset()
    assert fail(d, "e0", 2, 30.0) == []  # counting starts again from zero


def test_outcomes_of_requests_still_in_flight_while_ejected_are_not_counted() -> None:
    d = detector(consecutive_failures=2, failure_rate=None, base_ejection_time=10)
    fail(d, "e0", 2, 0.0)
    assert fail(d, "e0", 5, 1.0) == []
    assert d.ejected(10.0) == frozenset()
    assert fail(d, "e0", 1, 10.0) == []


def test_a_successful_active_check_brings_an_endpoint_back_early() -> None:
    d = detector(consecutive_failures=1, failure_rate=None, base_ejection_time=30)
    fail(d, "e0", 1, 0.0)
    assert not d.checked("e0", ok=False, now=5.0)
    assert d.is_ejected("e0", 5.0)
    assert d.checked("e0", ok=True, now=6.0)
    assert d.ejected(6.0) == frozenset()
    assert not d.checked("e0", ok=True, now=7.0)  # not ejected: nothing to bring back
    assert not d.checked("unknown", ok=True, now=7.0)


def test_never_more_than_the_max_fraction_is_ejected() -> None:
    d = detector(n=4, consecutive_failures=1, failure_rate=None, max_ejection_fraction=0.5)
    assert fail(d, "e0", 1, 0.0) != []
    assert fail(d, "e1", 1, 0.0) != []
    assert fail(d, "e2", 1, 0.0) == []  # a third of four would pass 50%
    assert d.ejected(0.0) == {"e0", "e1"}
    d.checked("e0", ok=True, now=1.0)
    assert fail(d, "e2", 1, 1.0) != []  # the run of failures went on: room now, ejected


def test_a_max_fraction_of_zero_ejects_nothing() -> None:
    d = detector(n=10, consecutive_failures=1, failure_rate=None, max_ejection_fraction=0.0)
    for endpoint_id in IDS:
        assert fail(d, endpoint_id, 3, 0.0) == []


def test_a_shrinking_cluster_brings_back_the_endpoints_due_back_soonest() -> None:
    d = detector(n=4, consecutive_failures=1, failure_rate=None, base_ejection_time=10)
    fail(d, "e0", 1, 0.0)  # until 10
    fail(d, "e1", 1, 5.0)  # until 15
    d.update(["e0", "e1", "e2"], 6.0)  # at most 1 of 3 now
    assert d.ejected(6.0) == {"e1"}
    d.update(["e1"], 7.0)
    assert d.ejected(7.0) == frozenset()


def test_an_update_forgets_removed_endpoints_and_starts_new_ones_clean() -> None:
    d = detector(n=3, consecutive_failures=2, failure_rate=None)
    fail(d, "e0", 1, 0.0)
    fail(d, "e1", 2, 0.0)
    d.update(["e1", "e2", "e3"], 1.0)
    assert d.ejected(1.0) == {"e1"}
    d.update(["e0", "e1", "e2", "e3"], 2.0)
    assert fail(d, "e0", 1, 2.0) == []  # its earlier failure was forgotten


@pytest.mark.parametrize(
    ("make_policy", "message"),
    [
        (lambda: OutlierPolicy(consecutive_failures=0), "consecutive_failures=0"),
        (lambda: OutlierPolicy(failure_rate=0.0), "failure_rate=0.0"),
        (lambda: OutlierPolicy(failure_rate=1.5), "failure_rate=1.5"),
        (lambda: OutlierPolicy(failure_rate_window=0), "failure_rate_window=0"),
        (lambda: OutlierPolicy(failure_rate_min_requests=0), "failure_rate_min_requests=0"),
        (lambda: OutlierPolicy(base_ejection_time=-1), "base_ejection_time=-1"),
        (lambda: OutlierPolicy(max_ejection_time=math.inf), "max_ejection_time=inf"),
        (
            lambda: OutlierPolicy(base_ejection_time=60, max_ejection_time=30),
            "max_ejection_time=30 must be at least base_ejection_time=60",
        ),
        (lambda: OutlierPolicy(max_ejection_fraction=1.1), "max_ejection_fraction=1.1"),
    ],
)
def test_policies_reject_values_that_cannot_work(
    make_policy: Callable[[], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_policy()


@settings(deadline=None, max_examples=100, derandomize=True)
@given(
    n=st.integers(1, 10),
    fraction=st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 1.0]),
    events=st.lists(
        st.tuples(
            st.integers(0, 9),
            st.sampled_from([*Outcome, "check", "update"]),
            st.floats(0, 5),
        ),
        max_size=150,
    ),
)
def test_the_ejected_fraction_never_exceeds_the_maximum(
    n: int, fraction: float, events: list[tuple[int, Outcome | str, float]]
) -> None:
    d = OutlierDetector(
        OutlierPolicy(
            consecutive_failures=2,
            failure_rate_min_requests=3,
            base_ejection_time=3.0,
            max_ejection_fraction=fraction,
        )
    )
    members = IDS[:n]
    d.update(members, 0.0)
    now = 0.0
    for index, what, step in events:
        now += step
        endpoint_id = members[index % len(members)]
        if what == "check":
            d.checked(endpoint_id, ok=index % 2 == 0, now=now)
        elif what == "update":
            members = IDS[: index + 1]
            d.update(members, now)
        else:
            assert isinstance(what, Outcome)
            d.observe(endpoint_id, what, now)
        ejected = d.ejected(now)
        assert ejected <= set(members)
        assert len(ejected) <= math.floor(fraction * len(members) + 1e-9)


def test_a_failing_endpoint_is_ejected_within_seconds_and_healthy_ones_never() -> None:
    rng = random.Random(7)
    d = OutlierDetector(OutlierPolicy())
    members = IDS[:5]
    d.update(members, 0.0)
    first_ejected_at: float | None = None
    sent_to_failing = 0
    now = 0.0
    for _ in range(30_000):  # 300 requests a second for 100 s
        now += 1 / 300
        candidates = sorted(set(members) - d.ejected(now))
        endpoint_id = rng.choice(candidates)
        if endpoint_id == "e4":
            sent_to_failing += 1
            outcome = Outcome.ERROR
        else:  # healthy ones fail now and then, and shed under load
            outcome = rng.choices(
                [Outcome.OK, Outcome.ERROR, Outcome.OVERLOADED], weights=[90, 2, 8]
            )[0]
        ejection = d.observe(endpoint_id, outcome, now)
        if ejection is not None:
            assert ejection.endpoint_id == "e4"
            first_ejected_at = first_ejected_at or now
    assert first_ejected_at is not None and first_ejected_at < 1.0
    assert sent_to_failing < 30  # of 30 000: ejected for 30 s, 60 s, ... after each return

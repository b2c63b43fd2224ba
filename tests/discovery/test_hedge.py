"""Hedging: the delay tracks a quantile of recent latencies, within a floor and a cap."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discovery._hedge import HedgePolicy, Hedger, LatencyWindow


def test_no_hedge_until_enough_latencies_are_in() -> None:
    h = Hedger(HedgePolicy(min_samples=10))
    for i in range(9):
        h.observe(0.01, float(i))
        assert h.delay(float(i)) is None
    h.observe(0.01, 9.0)
    assert h.delay(9.0) == 0.01


def test_the_delay_tracks_the_p95_of_recent_latencies_and_follows_a_shift() -> None:
    rng = random.Random(0)
    h = Hedger(HedgePolicy(quantile=0.95, samples=1000, max_delay=10.0))
    now = 0.0
    for _ in range(5000):  # exponential, mean 20 ms: p95 = 0.02 * ln(20) ≈ 60 ms
        now += 0.001
        h.observe(rng.expovariate(1 / 0.02), now)
    assert h.delay(now) == pytest.approx(0.02 * math.log(20), rel=0.1)
    for _ in range(2000):  # the replica set gets 5x slower
        now += 0.001
        h.observe(rng.expovariate(1 / 0.1), now)
    assert h.delay(now) == pytest.approx(0.1 * math.log(20), rel=0.1)


def test_the_quantile_is_configurable() -> None:
    h = Hedger(HedgePolicy(quantile=0.5, min_samples=1))
    for latency in (0.05, 0.01, 0.04, 0.02, 0.03):
        h.observe(latency, 0.0)
    assert h.delay(0.0) == 0.03


def test_the_delay_is_clamped_to_the_floor_and_the_cap() -> None:
    h = Hedger(HedgePolicy(min_delay=0.005, max_delay=0.2, min_samples=1))
    h.observe(0.0001, 0.0)
    assert h.delay(0.0) == 0.005
    for _ in range(100):
        h.observe(5.0, 0.0)
    assert h.delay(0.0) == 0.2


def test_latencies_older_than_max_age_leave_the_window() -> None:
    h = Hedger(HedgePolicy(min_samples=5, max_age=10.0, max_delay=10.0))
    for _ in range(20):
        h.observe(1.0, 0.0)
    assert h.delay(10.0) == 1.0
    assert h.delay(10.5) is None  # all aged out: no hedging on stale figures
    for _ in range(5):
        h.observe(0.02, 11.0)
    assert h.delay(11.0) == 0.02


def test_bad_latencies_raise_value_error() -> None:
    h = Hedger()
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="latency"):
            h.observe(bad, 0.0)


@settings(deadline=None, max_examples=200, derandomize=True)
@given(
    latencies=st.lists(st.floats(0, 100), min_size=1, max_size=300),
    size=st.integers(1, 64),
    q=st.floats(0.01, 1.0),
)
def test_the_window_quantile_is_the_nearest_rank_of_the_last_samples(
    latencies: list[float], size: int, q: float
) -> None:
    window = LatencyWindow(size, max_age=1e9)
    for i, latency in enumerate(latencies):
        window.add(latency, float(i))
        recent = sorted(latencies[max(0, i + 1 - size) : i + 1])
        assert len(window) == len(recent)
        assert window.quantile(q, float(i)) == recent[max(math.ceil(q * len(recent)), 1) - 1]


def test_an_empty_window_has_no_quantile() -> None:
    assert LatencyWindow(4, 1.0).quantile(0.5, 0.0) is None


@pytest.mark.parametrize(
    ("make_policy", "message"),
    [
        (lambda: HedgePolicy(quantile=0), "quantile=0"),
        (lambda: HedgePolicy(quantile=1.5), "quantile=1.5"),
        (lambda: HedgePolicy(min_delay=-1), "min_delay=-1"),
        (lambda: HedgePolicy(min_delay=2, max_delay=1), "max_delay=1 must be at least"),
        (lambda: HedgePolicy(samples=0), "samples=0"),
        (lambda: HedgePolicy(min_samples=0), "min_samples=0"),
        (lambda: HedgePolicy(samples=10, min_samples=20), "min_samples=20 must be at most"),
        (lambda: HedgePolicy(max_age=0), "max_age=0"),
    ],
)
def test_policies_reject_values_that_cannot_work(
    make_policy: Callable[[], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_policy()

"""LatencyFilter: a caller's own pauses do not count against the endpoints it called."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from discovery import Endpoint, LatencyFilter, PeakEwmaBalancer

MS = 1e-3


def test_a_pause_of_the_caller_is_not_held_against_a_fast_endpoint() -> None:
    f = LatencyFilter(decay=10.0)
    now = 0.0
    for _ in range(100):  # 2.0 ms served, 0.5 ms to reach it
        now += 0.01
        assert f.latency("fast", 2.5 * MS, 2.0 * MS, now) == pytest.approx(2.5 * MS)
    # A 45 ms pause of the caller: the replica still says it took 2 ms.
    assert f.latency("fast", 47 * MS, 2.0 * MS, now + 0.001) == pytest.approx(2.5 * MS, rel=0.01)


def test_a_slow_replica_still_looks_slow() -> None:
    f = LatencyFilter()
    f.latency("slow", 20.5 * MS, 20 * MS, 0.0)
    assert f.latency("slow", 20.4 * MS, 20 * MS, 0.01) == pytest.approx(20.4 * MS)
    # It cannot look slower than it was, whatever it says.
    assert f.latency("slow", 20.4 * MS, 5.0, 0.02) == pytest.approx(20.4 * MS)


def test_a_lasting_network_slowdown_lifts_the_floor_within_a_few_decays() -> None:
    f = LatencyFilter(decay=1.0)
    f.latency("far", 2.5 * MS, 2.0 * MS, 0.0)
    now, sample = 0.0, 0.0
    while now < 3.0:  # 10 ms more to reach it from now on
        now += 0.01
        sample = f.latency("far", 12.5 * MS, 2.0 * MS, now)
    assert sample > 11 * MS  # 1 - e**-3 of the way


@pytest.mark.parametrize("took", [None, "2ms", -1.0, math.nan, math.inf, True, [1]])
def test_a_reply_without_a_usable_took_counts_as_observed(took: object) -> None:
    f = LatencyFilter()
    f.latency("e", 2.5 * MS, 2.0 * MS, 0.0)
    assert f.latency("e", 40 * MS, took, 0.01) == 40 * MS


def test_endpoints_that_leave_are_forgotten() -> None:
    f = LatencyFilter()
    f.latency("a", 2.5 * MS, 2.0 * MS, 0.0)
    f.latency("b", 9.0 * MS, 1.0 * MS, 0.0)
    f.retain(["b"])
    assert f.floor("a") is None and f.floor("b") == pytest.approx(8.0 * MS)


@given(
    st.lists(
        st.tuples(
            st.floats(0, 1, allow_nan=False),
            st.one_of(st.none(), st.floats(0, 2, allow_nan=False)),
        ),
        min_size=1,
        max_size=50,
    )
)
def test_a_sample_is_never_above_what_was_observed_nor_below_what_was_served(
    tries: list[tuple[float, float | None]],
) -> None:
    f = LatencyFilter()
    for i, (observed, took) in enumerate(tries):
        sample = f.latency("e", observed, took, i * 0.01)
        assert 0 <= sample <= observed
        if took is not None:
            assert sample >= min(took, observed)


def test_with_the_filter_one_pause_does_not_send_traffic_to_the_slow_replica() -> None:
    # The bench's case as a sans-IO run: 3 fast replicas (2 ms), 1 slow (20 ms); at 1 s the
    # caller pauses 45 ms with one try in flight to each fast replica.
    endpoints = [Endpoint("m", f"r{i}", "127.0.0.1", 7000 + i) for i in range(4)]
    served = {"r0": 2 * MS, "r1": 2 * MS, "r2": 2 * MS, "r3": 20 * MS}

    def slow_share(filtered: bool) -> float:
        balancer = PeakEwmaBalancer(random.Random(7))
        balancer.update(endpoints, 0.0)
        f = LatencyFilter()
        picks = {e.id: 0 for e in endpoints}
        now = 0.0
        for n in range(4000):
            now += 0.5 * MS
            e = balancer.pick(endpoints, None, now)
            picks[e.id] += 1
            balancer.start(e, now)
            observed = served[e.id] + 0.5 * MS + (45 * MS if n == 2000 else 0.0)
            sample = f.latency(e.id, observed, served[e.id], now) if filtered else observed
            balancer.observe(e, sample, True, now)
        return picks["r3"] / sum(picks.values())

    assert slow_share(filtered=True) < 0.01
    assert slow_share(filtered=True) < slow_share(filtered=False)

"""Balancers: distribution, limits, stickiness, movement, bounded load, locality, simulations.

Every test is deterministic: a seeded `random.Random` and a fake clock (`now` values).
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discovery import DiscoveryError, Endpoint
from discovery._balancer import AllEndpointsBusy, Balancer, NoHealthyEndpoint
from discovery._ewma import PeakEwmaBalancer, PeakEwmaPolicy
from discovery._hashring import RingHashBalancer, RingHashPolicy
from discovery._load import EndpointLoad
from discovery._locality import LocalityBalancer, LocalityPolicy
from discovery._p2c import LeastRequestBalancer, LeastRequestPolicy
from discovery._wrr import RoundRobinBalancer, RoundRobinPolicy

CI = settings(deadline=None, max_examples=60, derandomize=True)


def ep(
    i: int, *, weight: int = 1, capacity: int = 0, zone: str = "", shm_domain: str = ""
) -> Endpoint:
    return Endpoint(
        "svc",
        f"e{i}",
        "10.0.0.1",
        7000 + i,
        weight=weight,
        capacity=capacity,
        zone=zone,
        shm_domain=shm_domain,
    )


def endpoints(n: int, *, weight: int = 1, capacity: int = 0) -> list[Endpoint]:
    return [ep(i, weight=weight, capacity=capacity) for i in range(n)]


Factory = Callable[[random.Random], Balancer]

FACTORIES: dict[str, Factory] = {
    "peak_ewma": PeakEwmaBalancer,
    "least_request": LeastRequestBalancer,
    "round_robin": RoundRobinBalancer,
    "ring_hash": RingHashBalancer,
    "locality(peak_ewma)": lambda rng: LocalityBalancer(
        PeakEwmaBalancer(rng), rng, shm_domain="host-a", zone="z1"
    ),
    "locality(ring_hash)": lambda rng: LocalityBalancer(
        RingHashBalancer(rng), rng, shm_domain="host-a", zone="z1"
    ),
}
KINDS = sorted(FACTORIES)


def make(kind: str, seed: int = 0) -> Balancer:
    return FACTORIES[kind](random.Random(seed))


# --- the protocol and its errors --------------------------------------------------------


def test_every_balancer_satisfies_the_protocol() -> None:
    rng = random.Random(0)
    balancers: list[Balancer] = [
        PeakEwmaBalancer(rng),
        LeastRequestBalancer(rng),
        RoundRobinBalancer(rng),
        RingHashBalancer(rng),
        LocalityBalancer(RoundRobinBalancer(rng), rng),
    ]
    assert len(balancers) == 5  # mypy checks the assignments above against Balancer


@pytest.mark.parametrize("kind", KINDS)
def test_picking_from_no_endpoints_raises_no_healthy_endpoint(kind: str) -> None:
    with pytest.raises(NoHealthyEndpoint, match="no healthy endpoint") as info:
        make(kind).pick([], None, now=0.0)
    assert isinstance(info.value, DiscoveryError) and isinstance(info.value, LookupError)


@pytest.mark.parametrize("kind", KINDS)
def test_when_every_endpoint_is_at_its_limit_the_pick_raises_all_endpoints_busy(
    kind: str,
) -> None:
    b = make(kind)
    eps = endpoints(3, capacity=1)
    b.update(eps, 0.0)
    for _ in range(3):
        b.start(b.pick(eps, b"k", 0.0), 0.0)
    with pytest.raises(AllEndpointsBusy, match=r"all 3 endpoints of service 'svc'") as info:
        b.pick(eps, b"k", 0.0)
    assert isinstance(info.value, DiscoveryError)
    b.observe(eps[1], 0.01, True, 0.1)
    assert b.pick(eps, b"k", 0.1) == eps[1]


@pytest.mark.parametrize("kind", KINDS)
def test_a_single_endpoint_is_always_picked_while_it_has_room(kind: str) -> None:
    b = make(kind)
    (only,) = endpoints(1, capacity=2)
    assert b.pick([only], None, 0.0) == only
    b.start(only, 0.0)
    assert b.pick([only], b"x", 0.0) == only
    b.start(only, 0.0)
    with pytest.raises(AllEndpointsBusy):
        b.pick([only], None, 0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_observations_and_reports_raise_value_error(kind: str) -> None:
    b = make(kind)
    e = ep(0)
    with pytest.raises(ValueError, match="latency"):
        b.observe(e, -1.0, True, 0.0)
    with pytest.raises(ValueError, match="latency"):
        b.observe(e, math.nan, True, 0.0)
    with pytest.raises(ValueError, match="queue_depth=-1"):
        b.report_load(e, -1, 4, 0.0)


@pytest.mark.parametrize(
    ("make_policy", "message"),
    [
        (lambda: PeakEwmaPolicy(decay=0), "decay=0"),
        (lambda: PeakEwmaPolicy(failure_penalty=0.5), "failure_penalty=0.5"),
        (lambda: PeakEwmaPolicy(initial_latency=-1), "initial_latency=-1"),
        (lambda: PeakEwmaPolicy(report_ttl=math.inf), "report_ttl=inf"),
        (lambda: LeastRequestPolicy(report_ttl=-1), "report_ttl=-1"),
        (lambda: RoundRobinPolicy(report_ttl=math.nan), "report_ttl=nan"),
        (lambda: RingHashPolicy(vnodes=0), "vnodes=0"),
        (lambda: RingHashPolicy(max_ring_size=0), "max_ring_size=0"),
        (lambda: RingHashPolicy(load_factor=0.9), "load_factor=0.9"),
        (lambda: LocalityPolicy(overprovisioning=0.5), "overprovisioning=0.5"),
        (lambda: LocalityPolicy(min_tier_size=0), "min_tier_size=0"),
    ],
)
def test_policies_reject_values_that_cannot_work(
    make_policy: Callable[[], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_policy()


# --- concurrency limits: never a full endpoint while another has room ---------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("pick"), st.sampled_from([None, b"hot", b"a", b"b", b"c"])),
        st.tuples(st.just("finish"), st.integers(0, 1000)),
    ),
    max_size=80,
)


@settings(deadline=None, max_examples=300, derandomize=True)
@given(
    kind=st.sampled_from(KINDS),
    capacities=st.lists(st.integers(0, 3), min_size=1, max_size=6),
    zones=st.lists(st.sampled_from(["z1", "z2"]), min_size=6, max_size=6),
    ops=OPS,
    seed=st.integers(0, 2**16),
)
def test_no_balancer_picks_an_endpoint_at_its_limit_while_another_has_room(
    kind: str, capacities: list[int], zones: list[str], ops: list[tuple[str, object]], seed: int
) -> None:
    eps = [
        ep(i, capacity=c, zone=zones[i], shm_domain="host-a" if i % 3 == 0 else "")
        for i, c in enumerate(capacities)
    ]
    b = make(kind, seed)
    b.update(eps, 0.0)
    outstanding = Counter[str]()  # the test's own count, not the balancer's
    now = 0.0
    for op, arg in ops:
        now += 0.001
        roomy = [e for e in eps if e.capacity == 0 or outstanding[e.id] < e.capacity]
        if op == "pick":
            assert arg is None or isinstance(arg, bytes)
            if not roomy:
                with pytest.raises(AllEndpointsBusy):
                    b.pick(eps, arg, now)
                continue
            chosen = b.pick(eps, arg, now)
            assert chosen in roomy
            b.start(chosen, now)
            outstanding[chosen.id] += 1
        else:
            busy = sorted(i for i, n in outstanding.items() if n)
            if busy:
                assert isinstance(arg, int)
                done = next(e for e in eps if e.id == busy[arg % len(busy)])
                b.observe(done, 0.01, True, now)
                outstanding[done.id] -= 1
        for e in eps:
            assert b.load(e, now).outstanding == outstanding[e.id]


def test_a_reported_capacity_overrides_the_advertised_one_until_the_report_expires() -> None:
    b = LeastRequestBalancer(random.Random(0), LeastRequestPolicy(report_ttl=2.0))
    a, other = ep(0, capacity=8), ep(1)
    b.report_load(a, queue_depth=2, capacity=2, now=0.0)
    assert b.load(a, 1.0) == EndpointLoad(outstanding=0, in_flight=1.0, limit=2)
    assert b.load(a, 0.0).saturated and not b.load(a, 0.0).full
    b.start(a, 1.0)
    b.start(a, 1.0)
    assert b.load(a, 1.0).full
    assert all(b.pick([a, other], None, 1.0) == other for _ in range(20))
    assert b.load(a, 2.5) == EndpointLoad(outstanding=2, in_flight=2.0, limit=8)
    assert not b.load(a, 2.5).full


def test_the_hard_limit_counts_only_this_caller_s_requests_so_stale_reports_strand_nothing() -> (
    None
):
    b = LeastRequestBalancer(random.Random(0))
    eps = endpoints(2, capacity=1)
    for e in eps:
        b.report_load(e, queue_depth=5, capacity=1, now=0.0)  # both busy with others' work
    assert {b.pick(eps, None, 0.1).id for _ in range(20)} == {"e0", "e1"}


# --- mesh-wide load --------------------------------------------------------------------


def test_a_replica_reported_busy_is_avoided_though_this_caller_sends_it_nothing() -> None:
    b = LeastRequestBalancer(random.Random(1))
    busy, idle = ep(0), ep(1)
    b.update([busy, idle], 0.0)
    b.report_load(busy, queue_depth=6, capacity=0, now=0.0)
    picks = Counter(b.pick([busy, idle], None, 0.5).id for _ in range(50))
    assert picks == Counter({"e1": 50})


def test_the_estimate_is_ours_now_plus_the_others_part_of_the_report_fading_out() -> None:
    b = PeakEwmaBalancer(random.Random(0), PeakEwmaPolicy(report_ttl=2.0))
    e = ep(0)
    b.start(e, 0.0)
    b.report_load(e, queue_depth=5, capacity=0, now=0.0)  # 5 there, 1 of them ours
    b.start(e, 0.0)
    b.start(e, 0.0)
    assert b.load(e, 0.0) == EndpointLoad(outstanding=3, in_flight=7.0, limit=0)
    assert b.load(e, 1.0).in_flight == pytest.approx(3 + 4 * 0.5)
    b.observe(e, 0.1, True, 1.0)
    assert b.load(e, 1.0).in_flight == pytest.approx(2 + 4 * 0.5)
    assert b.load(e, 2.0).in_flight == 2.0  # the report expired: our own count only
    assert b.load(e, 10.0).in_flight == 2.0


def test_two_callers_sharing_reports_split_a_limited_replica_instead_of_each_filling_it() -> None:
    shared, spare = ep(0, capacity=2), ep(1, capacity=2)
    callers = [LeastRequestBalancer(random.Random(seed)) for seed in (1, 2)]
    replica_depth = Counter[str]()
    for i, caller in enumerate(callers):
        other = callers[1 - i]
        chosen = caller.pick([shared, spare], None, 0.0)
        caller.start(chosen, 0.0)
        replica_depth[chosen.id] += 1
        other.report_load(chosen, replica_depth[chosen.id], 2, 0.0)  # a ping tells the other
        chosen = caller.pick([shared, spare], None, 0.0)
        caller.start(chosen, 0.0)
        replica_depth[chosen.id] += 1
        other.report_load(chosen, replica_depth[chosen.id], 2, 0.0)
    assert replica_depth == Counter({"e0": 2, "e1": 2})


# --- membership changes ----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_an_update_drops_the_state_of_removed_endpoints(kind: str) -> None:
    b = make(kind)
    eps = endpoints(3)
    b.update(eps, 0.0)
    b.start(eps[2], 0.0)
    b.report_load(eps[2], 9, 10, 0.0)
    b.update(eps[:2], 1.0)
    assert b.load(eps[2], 1.0) == EndpointLoad(0, 0, 0)
    b.observe(eps[2], 0.5, True, 1.0)  # a late answer from a removed endpoint is ignored
    assert b.load(eps[2], 1.0) == EndpointLoad(0, 0, 0)


def test_a_new_endpoint_starts_at_the_cluster_baseline_neither_flooded_nor_starved() -> None:
    rng = random.Random(3)
    b = PeakEwmaBalancer(rng)
    eps = endpoints(4)
    b.update(eps[:3], 0.0)
    now = 0.0
    for _ in range(3000):
        now += 0.01
        e = b.pick(eps[:3], None, now)
        b.start(e, now)
        b.observe(e, rng.uniform(0.04, 0.06), True, now)
    b.update(eps, now)
    assert b.latency(eps[3], now) == pytest.approx(b.baseline())
    assert b.baseline() == pytest.approx(0.05, rel=0.1)
    picks = Counter[str]()
    for _ in range(400):
        now += 0.01
        e = b.pick(eps, None, now)
        b.start(e, now)
        b.observe(e, rng.uniform(0.04, 0.06), True, now)
        picks[e.id] += 1
    assert 0.1 < picks["e3"] / 400 < 0.45


def test_a_removed_endpoint_re_added_starts_at_the_baseline_again() -> None:
    b = PeakEwmaBalancer(random.Random(0))
    a, slow = ep(0), ep(1)
    b.observe(a, 0.01, True, 1.0)
    b.observe(slow, 5.0, True, 1.0)
    assert b.latency(slow, 1.0) == 5.0
    b.update([a], 2.0)
    b.update([a, slow], 3.0)
    assert b.latency(slow, 3.0) == b.baseline()


# --- peak EWMA -------------------------------------------------------------------------


def test_the_estimate_jumps_up_at_once_and_comes_down_with_the_time_constant() -> None:
    b = PeakEwmaBalancer(random.Random(0), PeakEwmaPolicy(decay=10.0))
    e = ep(0)
    for t in range(10):
        b.observe(e, 0.01, True, float(t))
    b.observe(e, 1.0, True, 10.0)
    assert b.latency(e, 10.0) == 1.0
    previous = 1.0
    for t in range(11, 60):
        b.observe(e, 0.01, True, float(t))
        current = b.latency(e, float(t))
        assert 0.01 <= current < previous
        previous = current
    assert previous < 0.05
    # After one time constant of fast samples more than half the peak is gone.
    b.observe(e, 1.0, True, 100.0)
    for t in range(101, 111):
        b.observe(e, 0.01, True, float(t))
    assert b.latency(e, 110.0) < 0.5


def test_without_samples_the_estimate_relaxes_toward_the_cluster_baseline() -> None:
    b = PeakEwmaBalancer(random.Random(0), PeakEwmaPolicy(decay=1.0))
    fast, slow = ep(0), ep(1)
    b.observe(fast, 0.02, True, 0.0)
    b.observe(slow, 2.0, True, 0.0)
    for t in range(1, 30):
        b.observe(fast, 0.02, True, t * 0.5)
    assert b.latency(slow, 0.0) == 2.0
    assert b.latency(slow, 15.0) < 0.05
    assert b.latency(slow, 15.0) >= b.baseline() * 0.999


def test_a_failure_counts_as_a_penalty_latency_so_fast_failures_look_slow() -> None:
    b = PeakEwmaBalancer(random.Random(0), PeakEwmaPolicy(failure_penalty=10.0))
    ok_endpoint, failing = ep(0), ep(1)
    b.observe(ok_endpoint, 0.05, True, 0.0)
    b.observe(failing, 0.001, False, 0.0)
    assert b.latency(failing, 0.0) == pytest.approx(10 * 0.05)
    assert b.baseline() == 0.05  # failures never feed the baseline
    b.observe(failing, 3.0, False, 0.1)  # a slow failure counts as itself
    assert b.latency(failing, 0.1) == 3.0


def test_the_initial_latency_stands_in_until_the_first_success() -> None:
    b = PeakEwmaBalancer(random.Random(0), PeakEwmaPolicy(initial_latency=0.2))
    e = ep(0)
    assert b.latency(e, 0.0) == b.baseline() == 0.2
    b.observe(e, 0.0, False, 0.0)
    assert b.latency(e, 0.0) == pytest.approx(2.0)


def test_p2c_compares_requests_queued_per_slot_not_raw_counts() -> None:
    b = LeastRequestBalancer(random.Random(0))
    batching, serial = ep(0, capacity=8), ep(1)
    for _ in range(4):
        b.start(batching, 0.0)
    b.start(serial, 0.0)
    # 4 in flight on 8 slots waits less than 1 in flight on a replica that runs one at a time.
    assert all(b.pick([batching, serial], None, 0.0) == batching for _ in range(10))
    b.start(serial, 0.0)
    b.start(serial, 0.0)
    heavy = ep(2, weight=4)
    for _ in range(3):
        b.start(heavy, 0.0)
    # Weight divides the cost: 3 in flight at weight 4 beats 3 in flight at weight 1.
    assert all(b.pick([serial, heavy], None, 0.0) == heavy for _ in range(10))


# --- simulations with a fake clock -----------------------------------------------------


@dataclass
class Replica:
    """A FIFO replica with `slots` servers and exponential service times."""

    mean: float
    slots: int = 1
    fails: bool = False


@dataclass
class Run:
    share: dict[str, float]
    latencies: list[float]
    failures: int
    busy: int  # picks refused with AllEndpointsBusy
    peak_in_system: list[int]  # most requests each replica held at once
    caller_share: list[dict[str, float]]  # each caller's picks, as a fraction of its own

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def simulate(
    callers: Sequence[Balancer],
    replicas: Sequence[Replica],
    *,
    requests: int,
    rate: float,
    seed: int,
    report_to: Sequence[int] = (),
    advertise: bool = False,
    keys: Sequence[bytes | None] = (),
) -> Run:
    """Poisson arrivals at `rate`, spread over `callers`; each replica serves FIFO.

    Every caller sees its own answers; to the callers in `report_to`, each answer also
    carries the replica's queue depth (requests it holds) and slots, as replicas report.
    """
    rng = random.Random(seed)
    eps = [ep(i, capacity=r.slots if advertise else 0) for i, r in enumerate(replicas)]
    for b in callers:
        b.update(eps, 0.0)
    free_at = [[0.0] * r.slots for r in replicas]
    in_system = [0] * len(replicas)
    peak = [0] * len(replicas)
    events: list[tuple[float, int, int, int, float]] = []  # (done, seq, replica, caller, sent)
    seq = itertools.count()
    picks = Counter[str]()
    by_caller = [Counter[str]() for _ in callers]
    latencies: list[float] = []
    failures = busy = 0
    now = 0.0

    def finish_until(t: float) -> None:
        nonlocal failures
        while events and events[0][0] <= t:
            done, _, i, c, sent = heapq.heappop(events)
            in_system[i] -= 1
            ok = not replicas[i].fails
            callers[c].observe(eps[i], done - sent, ok, done)
            if c in report_to:
                callers[c].report_load(eps[i], in_system[i], replicas[i].slots, done)
            latencies.append(done - sent)
            failures += not ok

    for n in range(requests):
        now += rng.expovariate(rate)
        finish_until(now)
        c = n % len(callers)
        try:
            e = callers[c].pick(eps, keys[c] if keys else None, now)
        except AllEndpointsBusy:
            busy += 1
            continue
        callers[c].start(e, now)
        i = eps.index(e)
        picks[e.id] += 1
        by_caller[c][e.id] += 1
        replica = replicas[i]
        if replica.fails:
            done = now + 0.1 * replica.mean  # fails fast, without queueing
        else:
            slot = min(range(replica.slots), key=free_at[i].__getitem__)
            begin = max(now, free_at[i][slot])
            done = free_at[i][slot] = begin + rng.expovariate(1 / replica.mean)
        in_system[i] += 1
        peak[i] = max(peak[i], in_system[i])
        heapq.heappush(events, (done, next(seq), i, c, now))
    finish_until(math.inf)
    share = {e.id: picks[e.id] / requests for e in eps}
    caller_share = [{e.id: n[e.id] / max(n.total(), 1) for e in eps} for n in by_caller]
    return Run(share, latencies, failures, busy, peak, caller_share)


ONE_SLOW = [Replica(0.01), Replica(0.01), Replica(0.01), Replica(0.1)]
ONE_FAILING = [Replica(0.01), Replica(0.01), Replica(0.01), Replica(0.01, fails=True)]


@pytest.mark.parametrize("rate", [30, 150])  # round robin overloads the slow one at 150/s
def test_peak_ewma_sends_a_ten_times_slower_replica_under_a_tenth_of_the_traffic(
    rate: float,
) -> None:
    def run(kind: str) -> Run:
        return simulate([make(kind, 1)], ONE_SLOW, requests=6000, rate=rate, seed=1)

    ewma, least, rr = run("peak_ewma"), run("least_request"), run("round_robin")
    assert ewma.share["e3"] < 0.10
    assert rr.share["e3"] == pytest.approx(0.25, abs=0.01)
    assert ewma.quantile(0.99) < 0.33 * rr.quantile(0.99)  # the benchmark target
    assert ewma.quantile(0.99) < 0.5 * least.quantile(0.99)


def test_peak_ewma_sends_a_replica_failing_fast_little_traffic_where_least_request_does_not() -> (
    None
):
    run = simulate(
        [PeakEwmaBalancer(random.Random(2))], ONE_FAILING, requests=6000, rate=150, seed=2
    )
    assert run.share["e3"] < 0.01
    assert run.failures < 0.01 * 6000
    naive = simulate(
        [LeastRequestBalancer(random.Random(2))], ONE_FAILING, requests=6000, rate=150, seed=2
    )
    assert naive.share["e3"] > 0.25  # fast failures look idle to least-request


@pytest.mark.parametrize("kind", ["peak_ewma", "least_request"])
def test_load_reports_steer_a_caller_away_from_a_replica_another_caller_keeps_busy(
    kind: str,
) -> None:
    replicas = [Replica(0.01, slots=2)] * 3

    def run(reports: bool) -> Run:
        pinning = RingHashBalancer(random.Random(9), RingHashPolicy(load_factor=None))
        callers = [pinning, make(kind, 1)]  # one caller pins a hot key to one replica
        return simulate(
            callers,
            replicas,
            requests=8000,
            rate=300,
            seed=5,
            keys=[b"hot", None],
            report_to=[1] if reports else [],
        )

    blind, informed = run(reports=False), run(reports=True)
    hot = max(blind.caller_share[0], key=blind.caller_share[0].__getitem__)
    assert blind.caller_share[0][hot] == informed.caller_share[0][hot] == 1.0
    assert informed.caller_share[1][hot] < 0.7 * blind.caller_share[1][hot]
    assert informed.peak_in_system[int(hot[1:])] < blind.peak_in_system[int(hot[1:])]
    assert informed.quantile(0.99) < blind.quantile(0.99)


# --- weighted round robin ----------------------------------------------------------------


@CI
@given(
    weights=st.lists(st.integers(1, 12), min_size=1, max_size=8),
    rounds=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_round_robin_picks_each_endpoint_exactly_weight_times_per_round(
    weights: list[int], rounds: int, seed: int
) -> None:
    eps = [ep(i, weight=w) for i, w in enumerate(weights)]
    b = RoundRobinBalancer(random.Random(seed))
    picks = Counter(b.pick(eps, None, 0.0).id for _ in range(rounds * sum(weights)))
    assert picks == Counter({e.id: rounds * e.weight for e in eps})


@CI
@given(weights=st.lists(st.integers(1, 6), min_size=2, max_size=6), seed=st.integers(0, 99))
def test_round_robin_spreads_picks_of_one_endpoint_out(weights: list[int], seed: int) -> None:
    eps = [ep(i, weight=w) for i, w in enumerate(weights)]
    b = RoundRobinBalancer(random.Random(seed))
    total = sum(weights)
    order = [b.pick(eps, None, 0.0).id for _ in range(3 * total)]
    for e in eps:
        # Smooth WRR: in any window of `total` picks, each endpoint appears weight times,
        # give or take one.
        for start in range(len(order) - total + 1):
            window = order[start : start + total]
            assert abs(window.count(e.id) - e.weight) <= 1


def test_round_robin_skips_endpoints_at_their_limit_and_keeps_the_ratio_among_the_rest() -> None:
    eps = [ep(0, weight=3), ep(1, weight=1), ep(2, weight=1, capacity=1)]
    b = RoundRobinBalancer(random.Random(0))
    b.start(eps[2], 0.0)
    picks = Counter(b.pick(eps, None, 0.0).id for _ in range(40))
    assert picks == Counter({"e0": 30, "e1": 10})


def test_callers_start_round_robin_on_different_endpoints() -> None:
    eps = endpoints(8)
    firsts = {RoundRobinBalancer(random.Random(s)).pick(eps, None, 0.0).id for s in range(40)}
    assert len(firsts) >= 5


# --- ring hash: stickiness, movement, bounded load -------------------------------------

KEYS = [f"session-{i}".encode() for i in range(10_000)]


def owners(b: Balancer, eps: Sequence[Endpoint]) -> list[str]:
    return [b.pick(eps, key, 0.0).id for key in KEYS]


@settings(deadline=None, max_examples=8, derandomize=True)
@given(n=st.integers(2, 12), removed=st.integers(0, 11), seed=st.integers(0, 99))
def test_ring_hash_removing_one_of_n_endpoints_moves_only_its_keys_at_most_2_over_n(
    n: int, removed: int, seed: int
) -> None:
    eps = endpoints(n)
    b = RingHashBalancer(random.Random(seed))
    b.update(eps, 0.0)
    before = owners(b, eps)
    gone = eps[removed % n]
    rest = [e for e in eps if e != gone]
    b.update(rest, 1.0)
    after = owners(b, rest)
    moved = [i for i in range(len(KEYS)) if before[i] != after[i]]
    assert all(before[i] == gone.id for i in moved)  # only the removed endpoint's keys
    assert len(moved) / len(KEYS) <= 2 / n


@settings(deadline=None, max_examples=8, derandomize=True)
@given(n=st.integers(2, 12), seed=st.integers(0, 99))
def test_ring_hash_adding_one_endpoint_moves_at_most_2_over_n_plus_1_of_keys(
    n: int, seed: int
) -> None:
    eps = endpoints(n + 1)
    b = RingHashBalancer(random.Random(seed))
    b.update(eps[:n], 0.0)
    before = owners(b, eps[:n])
    b.update(eps, 1.0)
    after = owners(b, eps)
    moved = [i for i in range(len(KEYS)) if before[i] != after[i]]
    assert all(after[i] == eps[n].id for i in moved)  # keys only move to the new endpoint
    assert len(moved) / len(KEYS) <= 2 / (n + 1)


@CI
@given(
    n=st.integers(1, 10),
    keys=st.lists(st.binary(min_size=1, max_size=16), min_size=1, max_size=30),
    seed=st.integers(0, 99),
)
def test_ring_hash_sends_the_same_key_to_the_same_endpoint_while_membership_is_stable(
    n: int, keys: list[bytes], seed: int
) -> None:
    eps = endpoints(n)
    b = RingHashBalancer(random.Random(seed))
    b.update(eps, 0.0)
    first = {key: b.pick(eps, key, 0.0) for key in keys}
    for key in [*keys, *reversed(keys)]:
        assert b.pick(eps, key, 1.0) == first[key]
        assert b.owner(key) == first[key].id
    # ... and every process agrees: a fresh balancer with another rng maps keys the same.
    other = RingHashBalancer(random.Random(seed + 1))
    other.update(list(reversed(eps)), 0.0)
    assert {key: other.pick(eps, key, 0.0) for key in keys} == first


def test_ring_hash_spreads_keys_in_proportion_to_weight() -> None:
    eps = [ep(0, weight=1), ep(1, weight=2), ep(2, weight=5)]
    b = RingHashBalancer(random.Random(0))
    b.update(eps, 0.0)
    shares = Counter(owners(b, eps))
    for e in eps:
        assert shares[e.id] / len(KEYS) == pytest.approx(e.weight / 8, abs=0.05)


def test_ring_hash_moves_only_the_keys_of_an_endpoint_left_out_of_the_candidates() -> None:
    eps = endpoints(5)
    b = RingHashBalancer(random.Random(0))
    b.update(eps, 0.0)
    before = owners(b, eps)
    after = owners(b, eps[1:])  # e0 ejected: not a candidate, still a member
    assert all(a == o for a, o in zip(after, before, strict=True) if o != "e0")
    assert "e0" not in after


def test_ring_hash_without_a_key_spreads_requests_at_random() -> None:
    eps = endpoints(4)
    b = RingHashBalancer(random.Random(0), RingHashPolicy(load_factor=None))
    shares = Counter(b.pick(eps, None, 0.0).id for _ in range(4000))
    assert all(0.15 < shares[e.id] / 4000 < 0.35 for e in eps)


def test_ring_hash_takes_endpoints_it_was_never_told_about() -> None:
    eps = endpoints(3)
    b = RingHashBalancer(random.Random(0))
    b.update(eps[:2], 0.0)
    assert {b.pick(eps, key, 0.0).id for key in KEYS[:300]} == {"e0", "e1", "e2"}


def test_ring_hash_keeps_equal_weights_stable_whatever_their_size() -> None:
    small = RingHashBalancer(random.Random(0))
    large = RingHashBalancer(random.Random(0))
    eps_small, eps_large = endpoints(4, weight=1), endpoints(4, weight=700)
    small.update(eps_small, 0.0)
    large.update(eps_large, 0.0)
    assert [small.owner(k) for k in KEYS[:500]] == [large.owner(k) for k in KEYS[:500]]


def test_ring_hash_owner_of_an_empty_ring_raises_lookup_error() -> None:
    with pytest.raises(LookupError, match="empty"):
        RingHashBalancer(random.Random(0)).owner(b"k")


@CI
@given(
    n=st.integers(2, 8),
    c=st.sampled_from([1.0, 1.25, 1.5, 2.0]),
    ops=st.lists(st.integers(0, 9), min_size=1, max_size=200),
    seed=st.integers(0, 2**16),
)
def test_ring_hash_bounded_load_keeps_every_endpoint_within_c_times_the_average_under_a_hot_key(
    n: int, c: float, ops: list[int], seed: int
) -> None:
    eps = endpoints(n)
    b = RingHashBalancer(random.Random(seed), RingHashPolicy(load_factor=c))
    b.update(eps, 0.0)
    rng = random.Random(seed)
    in_flight: list[Endpoint] = []
    for op in ops:
        if op < 7 or not in_flight:  # 70%: a request, mostly for the hot key
            key = b"hot" if op < 6 else f"cold-{rng.random()}".encode()
            chosen = b.pick(eps, key, 0.0)
            b.start(chosen, 0.0)
            in_flight.append(chosen)
        else:
            done = in_flight.pop(rng.randrange(len(in_flight)))
            b.observe(done, 0.01, True, 0.0)
        load = [b.load(e, 0.0).outstanding for e in eps]
        assert max(load) <= math.ceil(c * sum(load) / n) + 1


def test_ring_hash_sends_a_hot_key_to_its_owner_while_its_load_is_within_the_bound() -> None:
    eps = endpoints(4)
    b = RingHashBalancer(random.Random(0), RingHashPolicy(load_factor=1.25))
    b.update(eps, 0.0)
    owner = b.owner(b"hot")
    chosen = [b.pick(eps, b"hot", 0.0) for _ in range(3)]
    assert {e.id for e in chosen} == {owner}  # nothing in flight: the owner every time
    for e in chosen:
        b.start(e, 0.0)
    spill = b.pick(eps, b"hot", 0.0)
    assert spill.id != owner


def test_ring_hash_without_a_bound_sends_a_hot_key_to_its_owner_whatever_its_load() -> None:
    eps = endpoints(4)
    b = RingHashBalancer(random.Random(0), RingHashPolicy(load_factor=None))
    b.update(eps, 0.0)
    for _ in range(50):
        b.start(b.pick(eps, b"hot", 0.0), 0.0)
    assert b.load(next(e for e in eps if e.id == b.owner(b"hot")), 0.0).outstanding == 50


def test_ring_hash_scales_a_ring_of_large_weights_down_to_its_maximum_size() -> None:
    eps = [ep(0, weight=1), ep(1, weight=999_983)]  # coprime: the gcd does not help
    b = RingHashBalancer(random.Random(0), RingHashPolicy(max_ring_size=2000))
    b.update(eps, 0.0)
    shares = Counter(owners(b, eps)[:2000])
    assert shares["e1"] > 1900
    assert b.pick([eps[0]], b"any", 0.0) == eps[0]


# --- locality ----------------------------------------------------------------------------


def cluster() -> list[Endpoint]:
    """Two endpoints on our host, two more in our zone, two elsewhere."""
    return [
        ep(0, shm_domain="host-a", zone="z1", capacity=2),
        ep(1, shm_domain="host-a", zone="z1", capacity=2),
        ep(2, shm_domain="host-b", zone="z1"),
        ep(3, shm_domain="host-b", zone="z1"),
        ep(4, shm_domain="host-c", zone="z2"),
        ep(5, shm_domain="host-c", zone="z2"),
    ]


def local(inner: Balancer | None = None, policy: LocalityPolicy | None = None) -> LocalityBalancer:
    rng = random.Random(0)
    return LocalityBalancer(
        inner or RoundRobinBalancer(rng), rng, shm_domain="host-a", zone="z1", policy=policy
    )


def test_locality_sends_everything_to_the_shm_domain_while_it_is_healthy() -> None:
    eps = cluster()
    b = local()
    b.update(eps, 0.0)
    assert b.shares(eps, 0.0) == [1.0, 0.0, 0.0]
    assert {b.pick(eps, None, 0.0).id for _ in range(100)} == {"e0", "e1"}


def test_locality_spills_what_a_half_available_tier_cannot_take_times_overprovisioning() -> None:
    eps = cluster()
    b = local()
    b.update(eps, 0.0)
    b.start(eps[0], 0.0)
    b.start(eps[0], 0.0)  # e0 is at its capacity: half the shm tier is available
    assert b.shares(eps, 0.0) == pytest.approx([0.7, 0.3, 0.0])
    picks = Counter(b.pick(eps, None, 0.0).id for _ in range(2000))
    assert picks["e0"] == 0
    assert picks["e1"] / 2000 == pytest.approx(0.7, abs=0.04)
    assert (picks["e2"] + picks["e3"]) / 2000 == pytest.approx(0.3, abs=0.04)


def test_locality_prefers_the_zone_when_the_shm_domain_is_gone_then_anything() -> None:
    eps = cluster()
    b = local()
    b.update(eps, 0.0)
    assert {b.pick(eps[2:], None, 0.0).id for _ in range(50)} == {"e2", "e3"}
    assert {b.pick(eps[4:], None, 0.0).id for _ in range(50)} == {"e4", "e5"}
    assert b.shares(eps[3:], 0.0) == pytest.approx([0.0, 0.7, 0.3])


def test_locality_scales_up_shares_when_every_tier_is_short() -> None:
    eps = cluster()
    b = local()
    b.update(eps, 0.0)
    # One of two left in the zone tier (0.7), one of two elsewhere (0.3 of what is left).
    assert b.shares([eps[3], eps[5]], 0.0) == pytest.approx([0.0, 0.7, 0.3])
    # Only a third of each tier: 0.467 + 0.467 + 0.067, already 1.
    assert sum(b.shares([eps[1]], 0.0)) == pytest.approx(1.0)


def test_locality_counts_a_small_tier_as_min_tier_size() -> None:
    eps = cluster()
    b = local(policy=LocalityPolicy(min_tier_size=4))
    b.update(eps, 0.0)
    assert b.shares(eps, 0.0) == pytest.approx([0.7, 0.3, 0.0])


def test_locality_without_a_domain_or_zone_passes_everything_through() -> None:
    eps = cluster()
    rng = random.Random(0)
    b = LocalityBalancer(RoundRobinBalancer(rng), rng)
    assert b.shares(eps, 0.0) == [0.0, 0.0, 1.0]
    assert {b.pick(eps, None, 0.0).id for _ in range(60)} == {e.id for e in eps}


def test_locality_draws_a_keyed_request_s_tier_from_its_key() -> None:
    eps = cluster()
    b = local(RingHashBalancer(random.Random(0)))
    b.update(eps, 0.0)
    b.start(eps[0], 0.0)
    b.start(eps[0], 0.0)
    for key in KEYS[:200]:
        first = b.pick(eps, key, 0.0)
        assert all(b.pick(eps, key, 0.0) == first for _ in range(3))


def test_locality_counts_a_replica_reported_saturated_as_unavailable() -> None:
    eps = cluster()
    b = local()
    b.update(eps, 0.0)
    b.report_load(eps[0], queue_depth=2, capacity=2, now=0.0)  # other callers filled e0
    assert b.shares(eps, 0.0) == pytest.approx([0.7, 0.3, 0.0])


def test_locality_still_prefers_the_shm_domain_when_the_whole_cluster_is_saturated() -> None:
    eps = cluster()
    b = local()
    b.update(eps, 0.0)
    for e in eps:
        b.report_load(e, queue_depth=9, capacity=2, now=0.0)
    assert {b.pick(eps, None, 0.0).id for _ in range(50)} == {"e0", "e1"}


def test_locality_lets_the_inner_balancer_say_all_are_busy() -> None:
    eps = [ep(0, shm_domain="host-a", capacity=1), ep(1, capacity=1)]
    b = local()
    b.update(eps, 0.0)
    for e in eps:
        b.start(e, 0.0)
    assert b.shares(eps, 0.0) == [0.0, 0.0, 0.0]
    with pytest.raises(AllEndpointsBusy):
        b.pick(eps, None, 0.0)
    b.observe(eps[1], 0.01, False, 0.1)
    assert b.pick(eps, None, 0.1) == eps[1]
    b.report_load(eps[1], 1, 1, 0.1)
    assert b.load(eps[1], 0.1).saturated


def test_peak_ewma_starts_an_endpoint_from_its_first_sample() -> None:
    """Regression: the first sample was blended with the 100 ms prior at zero weight, so
    the first endpoint to answer stayed near 100 ms and was starved for seconds."""
    balancer = PeakEwmaBalancer(random.Random(1))
    fast = Endpoint("svc", "fast", "127.0.0.1", 1)
    balancer.update([fast], 0.0)
    balancer.start(fast, 0.0)
    balancer.observe(fast, 0.002, True, 0.002)
    assert balancer.latency(fast, 0.002) == pytest.approx(0.002)

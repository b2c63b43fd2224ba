"""Peak-EWMA power of two choices: the default balancer.

Each endpoint's cost is a latency estimate times how long a new request would queue:

    cost = estimate * (1 + in_flight / slots) / weight      (slots: its limit, else 1)

The estimate is peak-sensitive (Finagle's and Linkerd's PeakEwma): a sample above it
replaces it at once; otherwise it moves toward the sample with time constant `decay`
(seconds, whatever the request rate). Where Linkerd lets an unsampled estimate decay to 0,
which makes an idle endpoint look free, here it relaxes toward the cluster's baseline (an
EWMA of every successful latency): with no news an endpoint looks average, and a new
endpoint starts there, neither flooded nor starved.

A failed try counts as `failure_penalty` times the slowest recent success in the cluster
(a peak EWMA of every successful latency; or the failure's own latency, if larger), so an
endpoint that fails fast is not mistaken for a fast one: a peak-sensitive estimate sits
near the recent maximum of its latencies, so the penalty is measured against the cluster's
recent maximum, not its mean. It then relaxes toward the baseline like any estimate, so a
failing endpoint is tried again, once, after about `decay` * ln(penalty / baseline)
seconds. `in_flight` folds in the queue depth replicas report (see `LoadTable`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from ._balancer import LoadTracking, queue_factor, two_choices
from ._checks import check_at_least, check_seconds
from ._endpoint import Endpoint


@dataclass(frozen=True, slots=True)
class PeakEwmaPolicy:
    """Settings of the peak-EWMA balancer; raises ValueError on a bad value."""

    decay: float = 10.0
    """Time constant of the latency estimates, seconds (Linkerd's default)."""
    failure_penalty: float = 10.0
    """A failed try counts as this many times the slowest recent success in the cluster."""
    initial_latency: float = 0.1
    """Latency assumed, in seconds, until the cluster has a successful sample."""
    report_ttl: float = 2.0
    """Seconds a replica's load report stays valid."""

    def __post_init__(self) -> None:
        check_seconds("decay", self.decay)
        check_at_least("failure_penalty", self.failure_penalty, 1.0)
        check_seconds("initial_latency", self.initial_latency)
        check_seconds("report_ttl", self.report_ttl, zero=True)


@dataclass(slots=True)
class _Ewma:
    value: float
    stamp: float

    def weight(self, now: float, decay: float) -> float:
        """How much of the current value survives until `now`."""
        return math.exp(-max(now - self.stamp, 0.0) / decay)

    def read(self, now: float, decay: float, prior: float) -> float:
        """The value at `now`, relaxed toward `prior` since the last sample."""
        return prior + (self.value - prior) * self.weight(now, decay)

    def peak(self, sample: float, now: float, decay: float, prior: float) -> None:
        """Take a sample: up at once, down with time constant `decay`."""
        current = self.read(now, decay, prior)
        if sample >= current:
            self.value = sample
        else:
            w = self.weight(now, decay)
            self.value = current * w + sample * (1.0 - w)
        self.stamp = now

    def mean(self, sample: float, now: float, decay: float) -> None:
        """Take a sample into a plain time-weighted average."""
        w = self.weight(now, decay)
        self.value = self.value * w + sample * (1.0 - w)
        self.stamp = now


class PeakEwmaBalancer(LoadTracking):
    """P2C on peak-EWMA latency * queueing, errors penalised."""

    def __init__(self, rng: random.Random, policy: PeakEwmaPolicy | None = None) -> None:
        self.policy = policy or PeakEwmaPolicy()
        super().__init__(self.policy.report_ttl)
        self._rng = rng
        self._estimates: dict[str, _Ewma] = {}
        self._baseline: _Ewma | None = None  # mean of successes
        self._slowest: _Ewma | None = None  # peak of successes

    def pick(self, endpoints: Sequence[Endpoint], key: bytes | None, now: float) -> Endpoint:
        """The cheaper of two random endpoints with room (`key` is not used)."""
        loads = self._loads

        def cost(e: Endpoint) -> float:
            queueing = queue_factor(loads.in_flight(e.id, now), loads.limit(e, now))
            return self.latency(e, now) * queueing / e.weight

        return two_choices(endpoints, self._rng, lambda e: loads.has_room(e, now), cost)

    def latency(self, endpoint: Endpoint, now: float) -> float:
        """The endpoint's latency estimate, in seconds."""
        estimate = self._estimates.get(endpoint.id)
        prior = self.baseline()
        return prior if estimate is None else estimate.read(now, self.policy.decay, prior)

    def baseline(self) -> float:
        """The cluster's typical successful latency, in seconds."""
        return self.policy.initial_latency if self._baseline is None else self._baseline.value

    def slowest(self, now: float) -> float:
        """The cluster's slowest recent success (a peak EWMA), in seconds."""
        prior = self.baseline()
        return prior if self._slowest is None else self._slowest.read(now, self.policy.decay, prior)

    def _observed(self, endpoint: Endpoint, latency: float, ok: bool, now: float) -> None:
        decay, prior = self.policy.decay, self.baseline()
        sample = latency if ok else max(latency, self.policy.failure_penalty * self.slowest(now))
        estimate = self._estimates.get(endpoint.id)
        if estimate is None:
            # The first sample is the estimate: blending it with the prior at the same
            # instant would give it no weight, and a fast endpoint would start at the
            # prior (100 ms before any success) and be starved for seconds.
            self._estimates[endpoint.id] = _Ewma(sample, now)
        else:
            estimate.peak(sample, now, decay, prior)
        if not ok:
            return
        if self._baseline is None or self._slowest is None:
            self._baseline, self._slowest = _Ewma(latency, now), _Ewma(latency, now)
        else:
            self._baseline.mean(latency, now, decay)
            self._slowest.peak(latency, now, decay, self._baseline.value)

    def _updated(self, endpoints: Sequence[Endpoint], now: float) -> None:
        ids = {e.id for e in endpoints}
        for endpoint_id in [i for i in self._estimates if i not in ids]:
            del self._estimates[endpoint_id]

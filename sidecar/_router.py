"""Router: for each request, cluster → endpoint → link (DESIGN.md "Router").

Clusters are opened on first use and kept current by the registry's watch. Each has a
balancer (peak-EWMA power of two choices by default), an outlier detector whose ejected
endpoints are skipped, and a retry account: a try that fails retryably (connection
refused, UNAVAILABLE for an idempotent request, shed) is tried again on another endpoint
after a jittered back-off, within the caller's deadline and the cluster's retry budget.
The request is replayed as it was (a relayed message goes on by reference again).
Active checks ping ejected endpoints, which come back early only if their app is healthy,
and idle ones for their load (see `check`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import transport
from discovery import (
    AllEndpointsBusy,
    Balancer,
    Cluster,
    Endpoint,
    GiveUp,
    HedgePolicy,
    Hedger,
    LatencyFilter,
    LeastRequestBalancer,
    LocalityBalancer,
    NoHealthyEndpoint,
    Outcome,
    OutlierDetector,
    OutlierPolicy,
    PeakEwmaBalancer,
    Registry,
    Retrier,
    RetryBudget,
    RetryPolicy,
    RingHashBalancer,
    RoundRobinBalancer,
)
from transport import (
    BufferPool,
    ErrorCode,
    Header,
    Kind,
    Limits,
    Message,
    Placer,
    StreamLink,
    Tls,
    identity_uri,
)

from ._admission import OVERLOADED, retry_after_of
from ._errors import Unavailable
from ._links import LinkPool, ShmSlot
from ._metrics import HEDGES, RETRIES
from ._settings import BalancerName, Settings

logger = logging.getLogger(__name__)

FIRST_ANSWER_TIMEOUT = 5.0  # how long a new cluster may wait for the registry's first answer

Send = Callable[[StreamLink, Placer | None], Awaitable[Message]]


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """How one service's requests are spread and retried."""

    balancer: BalancerName = "peak_ewma"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    outlier: OutlierPolicy = field(default_factory=OutlierPolicy)
    hedge: HedgePolicy | None = None  # opt-in: a second try after the hedge delay


class _TryFailed(Exception):
    """One try failed: the error, how it ended, and where."""

    def __init__(self, error: BaseException, outcome: Outcome, endpoint: Endpoint) -> None:
        super().__init__(str(error))
        self.error, self.outcome, self.endpoint = error, outcome, endpoint


@dataclass(slots=True)
class _Route:
    """A cluster with its balancer, outlier detector and retry account."""

    cluster: Cluster
    balancer: Balancer
    outlier: OutlierDetector
    retrier: Retrier
    hedger: Hedger | None = None
    known: dict[str, Endpoint] = field(default_factory=dict)
    latency: LatencyFilter = field(default_factory=LatencyFilter)

    def membership_changed(self, endpoints: tuple[Endpoint, ...]) -> None:
        now = time.monotonic()
        changed = {e.id for e in endpoints if self.known.get(e.id, e) != e}
        if changed:
            # Re-announced with another record (a restarted replica: new port or shm
            # domain): what was learned of the old one (a failure-penalised estimate, an
            # ejection) is forgotten, as for an endpoint that left and came back.
            kept = [e for e in endpoints if e.id not in changed]
            self.balancer.update(kept, now)
            self.outlier.update([e.id for e in kept], now)
            self.latency.retain(e.id for e in kept)
        self.balancer.update(endpoints, now)
        self.outlier.update([e.id for e in endpoints], now)
        self.latency.retain(e.id for e in endpoints)
        self.known = {e.id: e for e in endpoints}


def policy_from_settings(settings: Settings) -> Callable[[str], RoutePolicy]:
    """Each service's RoutePolicy: the settings' defaults, then its `services` overrides."""

    def policy(service: str) -> RoutePolicy:
        override = settings.services.get(service)
        balancer = (override and override.balancer) or settings.balancer
        attempts = (override and override.max_attempts) or settings.max_attempts
        ratio = settings.retry_budget_ratio
        if override is not None and override.retry_budget_ratio is not None:
            ratio = override.retry_budget_ratio
        retry = RetryPolicy(max_attempts=attempts, budget=RetryBudget(ratio=ratio))
        hedge = settings.hedge if override is None or override.hedge is None else override.hedge
        eject_after = settings.eject_after
        if override is not None and override.eject_after is not None:
            eject_after = override.eject_after
        max_ejected = settings.max_ejected
        if override is not None and override.max_ejected is not None:
            max_ejected = override.max_ejected
        outlier = OutlierPolicy(
            consecutive_failures=eject_after or None,
            failure_rate=OutlierPolicy().failure_rate if eject_after else None,
            max_ejection_fraction=max_ejected,
        )
        return RoutePolicy(
            balancer=balancer,
            retry=retry,
            outlier=outlier,
            hedge=HedgePolicy() if hedge else None,
        )

    return policy


def _balancer(name: BalancerName, rng: random.Random) -> Balancer:
    if name == "least_request":
        return LeastRequestBalancer(rng)
    if name == "round_robin":
        return RoundRobinBalancer(rng)
    if name == "ring_hash":
        return RingHashBalancer(rng)
    return PeakEwmaBalancer(rng)


def outcome_of(exc: BaseException, sent: bool) -> Outcome:
    """How a try that raised `exc` ended, for the balancer, outlier detector and retries."""
    if isinstance(exc, transport.DeadlineExceeded | TimeoutError):
        return Outcome.DEADLINE_EXCEEDED
    if isinstance(exc, transport.LinkClosed):
        return Outcome.UNAVAILABLE if sent else Outcome.CONNECT_FAILED
    if isinstance(exc, transport.RemoteError):
        if exc.code is ErrorCode.UNAVAILABLE:
            return Outcome.UNAVAILABLE
        if exc.code is ErrorCode.RESOURCE_EXHAUSTED and exc.message.startswith(OVERLOADED):
            return Outcome.OVERLOADED
        if exc.code in (
            ErrorCode.INVALID_ARGUMENT,
            ErrorCode.NOT_FOUND,
            ErrorCode.PERMISSION_DENIED,
        ):
            return Outcome.BAD_REQUEST
        if exc.code is ErrorCode.DEADLINE_EXCEEDED:
            return Outcome.DEADLINE_EXCEEDED
        if exc.code is ErrorCode.CANCELLED:
            return Outcome.CANCELLED
    if isinstance(exc, transport.Cancelled | asyncio.CancelledError):
        return Outcome.CANCELLED
    return Outcome.ERROR


class Router:
    """Routes requests by service name to endpoints found through `registry`."""

    def __init__(
        self,
        registry: Registry,
        *,
        limits: Limits,
        pool: BufferPool,
        shm: ShmSlot,
        connections: int = 1,
        rng: random.Random | None = None,
        owns_registry: bool = False,
        policy: Callable[[str], RoutePolicy] | None = None,
        zone: str = "",
        check_interval: float = 1.0,
        tls: Tls | None = None,
        trust_domain: str = "",
    ) -> None:
        self.tls = tls  # mutual TLS to endpoints, each expected to be its service's identity
        self._trust_domain = trust_domain
        self._zone = zone
        self._check_interval = check_interval
        self._checker: asyncio.Task[None] | None = None
        self._policy = policy or (lambda service: RoutePolicy())
        self._routes: dict[str, _Route] = {}
        self._registry = registry
        self._owns_registry = owns_registry
        self._limits = limits
        self._pool = pool
        self._shm = shm
        self._connections = connections
        self._rng = rng or random.Random()
        self._clusters: dict[str, Cluster] = {}
        self._opening: dict[str, asyncio.Future[Cluster]] = {}
        self._links: dict[str, LinkPool] = {}

    @property
    def clusters(self) -> dict[str, Cluster]:
        """The clusters opened so far, by service."""
        return self._clusters

    async def cluster(self, service: str) -> Cluster:
        """The cluster of `service`, opened (and its first answer awaited) on first use."""
        cluster = self._clusters.get(service)
        if cluster is not None:
            return cluster
        opening = self._opening.get(service)
        if opening is None:
            opening = asyncio.get_running_loop().create_future()
            self._opening[service] = opening
            try:
                cluster = await self._open(service)
            except BaseException as exc:
                opening.set_exception(exc)
                opening.exception()  # retrieved: others may not be waiting
                raise
            finally:
                del self._opening[service]
            opening.set_result(cluster)
            return cluster
        return await asyncio.shield(opening)

    async def send(
        self,
        service: str,
        send: Send,
        *,
        key: bytes | None = None,
        deadline: float | None = None,
        idempotent: bool = True,
    ) -> Message:
        """Pick an endpoint of `service` and `send` on a link to it, retrying under the
        service's retry budget on another endpoint when a try fails retryably (and, with
        hedging on, racing a second try after the hedge delay).

        `deadline` is in loop.time() terms. Raises Unavailable when no endpoint can be
        reached; what the last try raised otherwise.
        """
        route = await self._route(service)
        loop = asyncio.get_running_loop()
        if not route.retrier.begin(loop.time(), deadline):
            raise transport.DeadlineExceeded(f"no time left to call {service!r}")
        tried: set[str] = set()
        attempt = 1
        while True:
            endpoint = self._pick(route, tried, key, loop.time())
            if endpoint is None:
                cluster = route.cluster
                why = "none is reachable" if tried else "the registry lists none"
                stale = " (registry unreachable: last known set)" if cluster.stale else ""
                raise Unavailable(f"no endpoint of service {service!r}: {why}{stale}")
            try:
                if route.hedger is None:
                    return await self._attempt(route, endpoint, send)
                return await self._hedged(route, endpoint, send, tried, key, deadline)
            except _TryFailed as failed:
                exc, outcome, endpoint = failed.error, failed.outcome, failed.endpoint
                now = loop.time()
                retry_after = (
                    retry_after_of(exc.message)
                    if isinstance(exc, transport.RemoteError) and outcome is Outcome.OVERLOADED
                    else None
                )
                decision = route.retrier.decide(
                    attempt,
                    outcome,
                    now,
                    idempotent=idempotent,
                    deadline=deadline,
                    retry_after=retry_after,
                )
                tried.add(endpoint.id)
                if isinstance(decision, GiveUp):
                    # Nothing was sent on a refused connection: any other endpoint may do.
                    if outcome is Outcome.CONNECT_FAILED and self._pick(route, tried, key, now):
                        continue
                    raise exc from None
                logger.debug(
                    "retrying", extra={"service": service, "endpoint": endpoint.id,
                                       "outcome": outcome.value, "attempt": decision.attempt}
                )  # fmt: skip
                attempt = decision.attempt
                RETRIES.labels(service, outcome.value).inc()
                if decision.delay:
                    await asyncio.sleep(decision.delay)

    async def _attempt(self, route: _Route, endpoint: Endpoint, send: Send) -> Message:
        """One try on `endpoint`, told to the balancer, outlier detector and hedger.

        Raises _TryFailed carrying the outcome.
        """
        loop = asyncio.get_running_loop()
        route.balancer.start(endpoint, loop.time())
        # Durations on the performance counter: uvloop's loop.time() counts milliseconds.
        started = time.perf_counter()
        sent = False
        try:
            link = await self._links_to(endpoint).get()
            sent = True
            started = time.perf_counter()  # a new link's handshake is not the endpoint's latency
            reply = await send(link, link.placer)
        except (transport.TransportError, TimeoutError) as exc:
            outcome = outcome_of(exc, sent)
            now, elapsed = loop.time(), time.perf_counter() - started
            route.balancer.observe(endpoint, elapsed, False, now)
            route.outlier.observe(endpoint.id, outcome, now)
            raise _TryFailed(exc, outcome, endpoint) from exc
        except BaseException:
            now, elapsed = loop.time(), time.perf_counter() - started
            # Cancelled (a hedge lost): it took at least this long.
            route.balancer.observe(endpoint, elapsed, True, now)
            if route.hedger is not None:
                route.hedger.observe(elapsed, now)
            raise
        now, elapsed = loop.time(), time.perf_counter() - started
        # Before `observe`: the replica's count includes this request, still ours until then.
        _report_load(route, endpoint, reply.header.params, now)
        # What the replica says it took bounds what our own pauses added (see LatencyFilter).
        sample = route.latency.latency(endpoint.id, elapsed, reply.header.params.get("took"), now)
        route.balancer.observe(endpoint, sample, True, now)
        route.outlier.observe(endpoint.id, Outcome.OK, now)
        if route.hedger is not None:
            route.hedger.observe(elapsed, now)
        return reply

    async def _hedged(
        self,
        route: _Route,
        first: Endpoint,
        send: Send,
        tried: set[str],
        key: bytes | None,
        deadline: float | None,
    ) -> Message:
        """A try on `first`; past the hedge delay, a second on another endpoint. The first
        answer wins and the other try is cancelled (its peer gets CANCEL)."""
        assert route.hedger is not None
        loop = asyncio.get_running_loop()
        tries = [loop.create_task(self._attempt(route, first, send))]
        try:
            delay = route.hedger.delay(loop.time())
            if delay is not None:
                done, _ = await asyncio.wait(tries, timeout=delay)
                now = loop.time()
                if not done and route.retrier.allow_hedge(now, deadline):
                    second = self._pick(route, tried | {first.id}, key, now)
                    if second is not None:
                        HEDGES.labels(first.service).inc()
                        tries.append(loop.create_task(self._attempt(route, second, send)))
            failure: BaseException | None = None
            pending = set(tries)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is None:
                        return task.result()
                    failure = failure or task.exception()
            assert failure is not None
            raise failure
        finally:
            for task in tries:
                task.cancel()
            await asyncio.gather(*tries, return_exceptions=True)

    async def aclose(self) -> None:
        """Close every cluster and link (and the registry, if it was handed over)."""
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker
            self._checker = None
        clusters, self._clusters = list(self._clusters.values()), {}
        self._routes.clear()
        links, self._links = list(self._links.values()), {}
        for cluster in clusters:
            await cluster.aclose()
        await asyncio.gather(*(pool.aclose() for pool in links))
        if self._owns_registry:
            await self._registry.aclose()

    async def check(self) -> None:
        """One round of active checks, every `check_interval`: each ejected endpoint is
        pinged, and comes back early if its PONG says its app is healthy (a link that answers
        is not enough: an app may fail every request); each endpoint we hold an idle link to
        is pinged for its load. Every PONG's load report goes to the balancer."""
        now = asyncio.get_running_loop().time()
        checks = []
        for route in list(self._routes.values()):
            ejected = route.outlier.ejected(now)
            for endpoint in route.cluster.endpoints:
                if endpoint.id in ejected:
                    checks.append(self._check(route, endpoint, ejected=True))
                elif self._idle(route, endpoint, now):
                    checks.append(self._check(route, endpoint, ejected=False))
        await asyncio.gather(*checks)  # each bounded by its ping's timeout

    async def _check_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._check_interval)
            await self.check()

    def _idle(self, route: _Route, endpoint: Endpoint, now: float) -> bool:
        """True if we have a link to `endpoint` open but no request on it: no reply brings
        its load, so a ping does (what its other callers send it)."""
        links = self._links.get(endpoint.authority)
        idle = links is not None and links.connected and links.in_flight == 0
        return idle and route.balancer.load(endpoint, now).outstanding == 0

    async def _check(self, route: _Route, endpoint: Endpoint, *, ejected: bool) -> None:
        params = await self._ping(endpoint)
        now = asyncio.get_running_loop().time()
        if params is not None:
            _report_load(route, endpoint, params, now)
        if ejected:
            healthy = params is not None and params.get("healthy") is not False
            if route.outlier.checked(endpoint.id, healthy, now):
                logger.info("endpoint back after an active check",
                            extra={"endpoint": endpoint.id})  # fmt: skip

    async def _ping(self, endpoint: Endpoint) -> dict[str, object] | None:
        """The params of the endpoint's PONG (a replica without any: {}); None if it did
        not answer in time."""
        try:
            async with asyncio.timeout(min(self._check_interval, 2.0)):
                link = await self._links_to(endpoint).get()
                pong = await link.request(Header(Kind.PING))
        except (transport.TransportError, TimeoutError):
            return None
        return pong.header.params

    async def _open(self, service: str) -> Cluster:
        cluster = Cluster(service, self._registry)
        await cluster.__aenter__()
        try:
            async with asyncio.timeout(FIRST_ANSWER_TIMEOUT):
                await cluster.wait_ready()
            if not cluster.endpoints and not cluster.stale:
                # A first answer may be empty while endpoints are still being confirmed
                # (mDNS probes them first): give it a moment before calling it unavailable.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await cluster.wait_changed(cluster.version)
        except TimeoutError:
            logger.warning("registry slow to answer", extra={"service": service})
        except BaseException:
            await cluster.aclose()
            raise
        self._clusters[service] = cluster
        return cluster

    async def _route(self, service: str) -> _Route:
        route = self._routes.get(service)
        if route is None:
            cluster = await self.cluster(service)
            route = self._routes.get(service)
            if route is None:
                policy = self._policy(service)
                domain = await self._shm.get()
                # Same shm domain first, then same zone, spilling over when those are busy.
                balancer = LocalityBalancer(
                    _balancer(policy.balancer, self._rng),
                    self._rng,
                    shm_domain=domain.token if domain is not None else "",
                    zone=self._zone,
                )
                route = self._routes.get(service)
                if route is not None:
                    return route
                route = _Route(
                    cluster,
                    balancer,
                    OutlierDetector(policy.outlier),
                    Retrier(self._rng, policy.retry),
                    None if policy.hedge is None else Hedger(policy.hedge),
                )
                route.membership_changed(cluster.endpoints)
                cluster.add_listener(route.membership_changed)
                self._routes[service] = route
                if self._checker is None:
                    self._checker = asyncio.get_running_loop().create_task(
                        self._check_periodically(), name="router-active-checks"
                    )
        return route

    def _pick(
        self, route: _Route, tried: set[str], key: bytes | None, now: float
    ) -> Endpoint | None:
        members = route.cluster.endpoints
        ejected = route.outlier.ejected(now)
        candidates = [e for e in members if e.id not in tried and e.id not in ejected]
        if not candidates:  # everything left is ejected: better an ejected endpoint than none
            candidates = [e for e in members if e.id not in tried]
        if not candidates:
            return None
        try:
            return route.balancer.pick(candidates, key, now)
        except AllEndpointsBusy:
            return self._rng.choice(candidates)  # over our own limits: let the replica shed
        except NoHealthyEndpoint:
            return None

    def _links_to(self, endpoint: Endpoint) -> LinkPool:
        links = self._links.get(endpoint.authority)
        if links is None:
            links = LinkPool(
                endpoint.authority,
                self._connections,
                self._limits,
                self._pool,
                self._shm,
                tls=self.tls,
                expect_identity=(
                    None if self.tls is None else identity_uri(self._trust_domain, endpoint.service)
                ),
            )
            self._links[endpoint.authority] = links
        return links


def _report_load(route: _Route, endpoint: Endpoint, params: dict[str, object], now: float) -> None:
    """Give the balancer the load a reply's or PONG's params report, if well formed."""
    load = params.get("load")
    if isinstance(load, list) and len(load) == 2 and all(type(v) is int and v >= 0 for v in load):
        # The replica's own queue, across all its callers (mesh-wide load).
        route.balancer.report_load(endpoint, load[0], load[1], now)

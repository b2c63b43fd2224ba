"""The router's active checks and retries, against Services in this process over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from discovery import (
    Cluster,
    Endpoint,
    Outcome,
    OutlierDetector,
    OutlierPolicy,
    PeakEwmaBalancer,
    Retrier,
    open_registry,
)
from sidecar import MeshClient, RoutePolicy, Service, Unavailable
from sidecar._links import ShmSlot
from sidecar._request import build_request
from sidecar._router import Router, _Route
from sidecar._settings import BalancerName
from transport import BufferPool, Limits, Message, Placer, StreamLink

Arrays = dict[str, npt.NDArray[Any]]


async def echo(inputs: Arrays) -> Arrays:
    return dict(inputs)


async def broken(inputs: Arrays) -> Arrays:
    raise Unavailable("the model is broken")  # retryable: the caller tries another replica


async def _static(tmp_path: Path, services: Sequence[Service]) -> str:
    rows = "".join(
        f"    - {{id: r{i}, address: 127.0.0.1, port: {s.address.rsplit(':', 1)[1]}}}\n"
        for i, s in enumerate(services)
    )
    path = tmp_path / "mesh.yaml"
    await asyncio.to_thread(path.write_text, f"services:\n  model:\n{rows}")
    return f"static://{path}"


@contextlib.asynccontextmanager
async def _router(discovery: str, balancer: BalancerName = "round_robin") -> AsyncIterator[Router]:
    """A router whose active checks run only when the test calls `check()`."""
    registry = open_registry(discovery, {})
    await registry.__aenter__()
    policy = RoutePolicy(balancer=balancer)
    router = Router(
        registry,
        limits=Limits(),
        pool=BufferPool(),
        shm=ShmSlot(""),
        owns_registry=True,
        policy=lambda service: policy,
        check_interval=3600.0,
    )
    try:
        yield router
    finally:
        await router.aclose()


async def _call(router: Router) -> Message:
    async def send(link: StreamLink, placer: Placer | None) -> Message:
        header, parts = build_request("model", {"x": np.ones(4)}, Limits(), None, None)
        return await link.request(header, parts)

    return await router.send("model", send, deadline=asyncio.get_running_loop().time() + 5)


async def test_an_ejected_replica_whose_app_fails_every_request_stays_out(
    tmp_path: Path,
) -> None:
    async with (
        Service(echo, service="model") as good,
        Service(broken, service="model") as bad,
        _router(await _static(tmp_path, [good, bad])) as router,
    ):
        for _ in range(20):  # round robin: bad's tries fail and are retried on good
            await _call(router)
        route = router._routes["model"]
        assert route.outlier.is_ejected("r1", asyncio.get_running_loop().time())
        for _ in range(3):  # its link answers every ping; its app is not healthy
            await router.check()
            assert route.outlier.is_ejected("r1", asyncio.get_running_loop().time())
        assert bad.stats.requests == 5  # the five that ejected it, and none since


async def test_an_ejected_replica_that_answers_healthy_comes_back_early(tmp_path: Path) -> None:
    async with Service(echo, service="model") as good, Service(echo, service="model") as gone:
        port = int(gone.address.rsplit(":", 1)[1])
        async with _router(await _static(tmp_path, [good, gone])) as router:
            await _call(router)
            await gone.aclose()  # refused connections from now on
            for _ in range(20):
                await _call(router)
            route = router._routes["model"]
            assert route.outlier.is_ejected("r1", asyncio.get_running_loop().time())
            await router.check()  # nobody answers
            assert route.outlier.is_ejected("r1", asyncio.get_running_loop().time())
            async with Service(echo, service="model", port=port) as back:
                await router.check()
                assert not route.outlier.is_ejected("r1", asyncio.get_running_loop().time())
                for _ in range(4):
                    await _call(router)
                assert back.stats.requests >= 1


async def test_pings_of_idle_endpoints_bring_their_load_to_the_balancer(tmp_path: Path) -> None:
    running, release = asyncio.Event(), asyncio.Event()
    busy = 0

    async def held(inputs: Arrays) -> Arrays:
        nonlocal busy
        if "hold" in inputs:
            busy += 1
            if busy == 3:
                running.set()
            await release.wait()
        return {}

    async with (
        Service(held, service="model", queue_limit=8) as svc,
        _router(await _static(tmp_path, [svc]), "least_request") as router,
        MeshClient(svc.address, shm_dir="") as other,  # another caller of the same replica
        asyncio.timeout(10),
    ):
        await _call(router)  # opens the link the checks ping on
        route = router._routes["model"]
        endpoint = route.cluster.endpoints[0]
        holds = [asyncio.create_task(other.infer("model", {"hold": np.ones(1)})) for _ in range(3)]
        await running.wait()
        now = asyncio.get_running_loop().time()
        assert route.balancer.load(endpoint, now).in_flight == 0  # no reply told us yet
        await router.check()
        load = route.balancer.load(endpoint, asyncio.get_running_loop().time())
        assert load.limit == 8 and load.outstanding == 0
        assert 2.5 < load.in_flight <= 3  # the other caller's three, fading with age
        release.set()
        await asyncio.gather(*holds)


async def test_a_retried_request_is_copied_into_shared_memory_once(tmp_path: Path) -> None:
    failed = False

    async def flaky(inputs: Arrays) -> Arrays:
        nonlocal failed
        if not failed:
            failed = True
            raise Unavailable("warming up")
        return dict(inputs)

    async with (
        Service(echo, service="model") as steady,
        Service(flaky, service="model") as warming,
        MeshClient(
            discovery=await _static(tmp_path, [steady, warming]),
            policy=RoutePolicy(balancer="round_robin"),
        ) as client,
        asyncio.timeout(10),
    ):
        for i in range(3):  # round robin: one of the three lands first on `warming`
            x = np.full(1 << 16, i, np.float64)  # 512 KiB: over the inline threshold
            out = await client.infer("model", {"x": x}, timeout=5)
            np.testing.assert_array_equal(out["x"], x)  # the retry sent the same tensor
            del out
        assert warming.stats.failures == 1  # so exactly one request was sent twice
        stats = client.shm_stats()
        assert stats is not None and stats.bytes_copied == 3 * x.nbytes  # one copy each
        # Every lease ends (the request's own hold went with it): lease counts have no event.
        while (stats := client.shm_stats()) is not None and stats.leases:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def test_an_endpoint_announced_again_with_another_record_starts_clean() -> None:
    # A replica killed and restarted under the same id (new port, new shm domain) must not
    # inherit the failure-penalised estimate and the ejection of the one that died.
    old = Endpoint("toy", "toy-2", "127.0.0.1", 7001, shm_domain="a")
    other = Endpoint("toy", "toy-1", "127.0.0.1", 7000, shm_domain="a")
    balancer = PeakEwmaBalancer(random.Random(1))
    outlier = OutlierDetector(OutlierPolicy(consecutive_failures=1))
    route = _Route(Cluster.__new__(Cluster), balancer, outlier, Retrier(random.Random(1)))
    route.membership_changed((other, old))
    for now in (1.0, 2.0, 3.0):
        balancer.start(old, now)
        balancer.observe(old, 0.5, False, now)
        outlier.observe(old.id, Outcome.ERROR, now)
        balancer.start(other, now)
        balancer.observe(other, 0.002, True, now)
    assert old.id in outlier.ejected(3.5)
    picks_before = [balancer.pick([other, old], None, 3.5).id for _ in range(50)]
    assert picks_before.count(old.id) == 0
    restarted = Endpoint("toy", "toy-2", "127.0.0.1", 7002, shm_domain="b")
    route.membership_changed((other, restarted))
    assert restarted.id not in outlier.ejected(3.5)
    picks_after = [balancer.pick([other, restarted], None, 3.5).id for _ in range(50)]
    assert picks_after.count(restarted.id) > 0
    same_again = Endpoint("toy", "toy-2", "127.0.0.1", 7002, shm_domain="b")
    route.membership_changed((other, same_again))  # unchanged: what was learned stays
    assert route.known[restarted.id] == same_again

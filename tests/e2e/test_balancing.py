"""Balancing and retries with real replicas, through the proxyless router (static file)."""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sidecar import HandlerError, MeshClient, RoutePolicy
from sidecar._settings import BalancerName

from ..conftest import ServeProcess, child_env, wait_for
from .conftest import Sidecar

REPLICA = """
import asyncio
import numpy as np
from sidecar import Unavailable, serve
async def handle(inputs):
    if {failing}:
        raise Unavailable("this replica is broken")
    await asyncio.sleep({delay})
    return {{{{"who": np.array([{index}])}}}}  # formatted twice: here, then by serve_process
serve(handle, service="model", ready_file={{ready!r}}, uds_path={{uds!r}})
"""


def _replicas(
    serve_process: Callable[[str], ServeProcess], tmp_path: Path, delays: list[float],
    failing: int | None = None,
) -> tuple[list[ServeProcess], str]:  # fmt: skip
    replicas = [
        serve_process(REPLICA.format(index=i, delay=d, failing=i == failing))
        for i, d in enumerate(delays)
    ]
    rows = "".join(
        f"    - {{id: r{i}, address: 127.0.0.1, port: {r.mesh.rsplit(':', 1)[1]}}}\n"
        for i, r in enumerate(replicas)
    )
    path = tmp_path / "mesh.yaml"
    path.write_text(f"services:\n  model:\n{rows}")
    return replicas, f"static://{path}"


async def _load(
    discovery: str, callers: int, requests: int
) -> tuple[collections.Counter[int], int]:
    """`requests` calls from `callers` concurrent tasks; who answered, and how many failed."""
    answered: collections.Counter[int] = collections.Counter()
    failed = 0
    async with MeshClient(discovery=discovery, shm_dir="") as client:

        async def caller(n: int) -> None:
            nonlocal failed
            for _ in range(n):
                try:
                    out = await client.infer("model", {"x": np.ones(4)}, timeout=10)
                    answered[int(out["who"][0])] += 1
                except Exception:  # counted: the test asserts on it
                    failed += 1

        await asyncio.gather(*(caller(requests // callers) for _ in range(callers)))
    return answered, failed


def test_a_slow_replica_gets_little_traffic(
    serve_process: Callable[[str], ServeProcess], tmp_path: Path
) -> None:
    replicas, discovery = _replicas(serve_process, tmp_path, [0.002, 0.002, 0.002, 0.02])
    answered, failed = asyncio.run(_load(discovery, callers=4, requests=400))
    assert failed == 0
    assert answered[3] < 0.10 * sum(answered.values()), answered  # round robin: 25%
    for replica in replicas:
        assert replica.stop() == 0


def test_a_failing_replica_is_retried_around_and_stays_ejected_for_every_policy(
    serve_process: Callable[[str], ServeProcess], tmp_path: Path
) -> None:
    replicas, discovery = _replicas(serve_process, tmp_path, [0.001] * 4, failing=2)
    answered, failed = asyncio.run(_load(discovery, callers=4, requests=600))
    assert failed == 0, answered
    assert sum(answered.values()) == 600 and 2 not in answered
    # Its link answers every active check, ten a second here; its app fails every request.
    # Let back by each check, it would cost five more retries every time.
    policies: list[BalancerName] = ["peak_ewma", "least_request", "round_robin", "ring_hash"]
    results = asyncio.run(_sustained(discovery, policies, seconds=1.5))
    for policy, (requests, failed, retries) in zip(policies, results, strict=True):
        assert failed == 0 and requests >= 50, (policy, requests, failed)
        assert retries <= 5, (policy, retries)  # the tries that ejected it, none after
    for replica in replicas:
        assert replica.stop() == 0


async def _sustained(
    discovery: str, policies: list[BalancerName], seconds: float
) -> list[tuple[int, int, int]]:
    """A caller per policy, one request at a time for `seconds`, active checks every 0.1 s:
    for each, (requests, failed requests, retries)."""

    async def caller(policy: BalancerName) -> tuple[int, int, int]:
        async with MeshClient(
            discovery=discovery, shm_dir="", policy=RoutePolicy(balancer=policy)
        ) as client:
            router = await client._proxyless()
            router._check_interval = 0.1
            loop = asyncio.get_running_loop()
            end, requests, failed = loop.time() + seconds, 0, 0
            while loop.time() < end and requests < 1000:
                requests += 1
                try:
                    await client.infer("model", {"x": np.ones(4)}, timeout=5)
                except Exception:  # counted: the test asserts on it
                    failed += 1
                await asyncio.sleep(0.005)  # paces the load
            _, retries = router._routes["model"].retrier.account.totals(loop.time())
            return requests, failed, retries

    return list(await asyncio.gather(*(caller(p) for p in policies)))


SLOW = """
import asyncio
import numpy as np
from sidecar import serve
async def handle(inputs):
    await asyncio.sleep(0.3)
    return {{{{"who": np.array([{index}])}}}}  # formatted twice
serve(handle, service="model", ready_file={{ready!r}}, uds_path={{uds!r}}, queue_limit=1)
"""


def test_a_replica_over_its_queue_limit_sheds_with_a_retry_after(
    serve_process: Callable[[str], ServeProcess],
) -> None:
    replica = serve_process(SLOW.format(index=0))

    async def two_at_once() -> list[object]:
        async with MeshClient(replica.mesh, shm_dir="") as client:
            calls = [client.infer("model", {"x": np.ones(1)}, timeout=5) for _ in range(2)]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(two_at_once())
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) == 1, results
    assert "overloaded" in str(errors[0]) and "retry-after=" in str(errors[0])
    assert replica.stop() == 0


def test_shed_requests_are_retried_on_another_replica(
    serve_process: Callable[[str], ServeProcess], tmp_path: Path
) -> None:
    replicas = [serve_process(SLOW.format(index=i)) for i in range(2)]
    rows = "".join(
        f"    - {{id: r{i}, address: 127.0.0.1, port: {r.mesh.rsplit(':', 1)[1]}}}\n"
        for i, r in enumerate(replicas)
    )
    path = tmp_path / "mesh.yaml"
    path.write_text(f"services:\n  model:\n{rows}")

    async def two_at_once() -> list[int]:
        async with MeshClient(discovery=f"static://{path}", shm_dir="") as client:
            calls = [client.infer("model", {"x": np.ones(1)}, timeout=5) for _ in range(2)]
            return [int(out["who"][0]) for out in await asyncio.gather(*calls)]

    assert sorted(asyncio.run(two_at_once())) == [0, 1]  # both served, one after a shed
    for replica in replicas:
        assert replica.stop() == 0


LIMITED = """
from sidecar import serve
async def echo(inputs):
    return dict(inputs)
serve(echo, service="model", ready_file={ready!r}, uds_path={uds!r}, queue_limit=4)
"""


def test_replies_report_the_replicas_load(serve_process: Callable[[str], ServeProcess]) -> None:
    import transport

    replica = serve_process(LIMITED)

    async def call() -> object:
        link = await transport.connect(replica.mesh)
        try:
            header = transport.Header(transport.Kind.REQUEST, service="model", method="infer")
            reply = await link.request(header)
            return reply.header.params.get("load")
        finally:
            await link.aclose()

    assert asyncio.run(call()) == [1, 4]  # this request in progress, queue limit 4
    assert replica.stop() == 0


SOMETIMES_SLOW = """
import asyncio
import itertools
import numpy as np
from sidecar import serve
calls = itertools.count(1)
async def handle(inputs):
    try:
        await asyncio.sleep(2.0 if {sometimes} and next(calls) % 20 == 0 else 0.005)
    except asyncio.CancelledError:
        with open({cancelled!r}, "a") as f:
            f.write("x")
        raise
    return {{{{"who": np.array([{index}])}}}}  # formatted twice
serve(handle, service="model", ready_file={{ready!r}}, uds_path={{uds!r}})
"""


def test_hedging_cuts_the_tail_and_cancels_the_loser(
    serve_process: Callable[[str], ServeProcess], tmp_path: Path
) -> None:
    from discovery import HedgePolicy
    from sidecar import RoutePolicy

    cancelled = tmp_path / "cancelled"
    replicas = [
        serve_process(SOMETIMES_SLOW.format(index=i, sometimes=i == 0, cancelled=str(cancelled)))
        for i in range(2)
    ]
    rows = "".join(
        f"    - {{id: r{i}, address: 127.0.0.1, port: {r.mesh.rsplit(':', 1)[1]}}}\n"
        for i, r in enumerate(replicas)
    )
    path = tmp_path / "mesh.yaml"
    path.write_text(f"services:\n  model:\n{rows}")
    policy = RoutePolicy(balancer="round_robin", hedge=HedgePolicy(min_samples=10))

    async def sequential() -> list[float]:
        async with MeshClient(discovery=f"static://{path}", shm_dir="", policy=policy) as client:
            latencies = []
            for _ in range(200):  # bounded; one request in 40 lands on a 2 s stall
                started = asyncio.get_running_loop().time()
                await client.infer("model", {"x": np.ones(1)}, timeout=10)
                latencies.append(asyncio.get_running_loop().time() - started)
            return latencies

    latencies = asyncio.run(sequential())
    assert max(latencies[30:]) < 1.0, sorted(latencies)[-5:]  # no 2 s stall once it hedges
    assert cancelled.exists() and len(cancelled.read_text()) >= 3  # the stalled tries lost
    for replica in replicas:
        assert replica.stop() == 0


COUNTING = """
import asyncio
import numpy as np
from sidecar import serve
state = {{"now": 0, "max": 0}}
async def handle(inputs):
    state["now"] += 1
    state["max"] = max(state["max"], state["now"])
    try:
        await asyncio.sleep(0.05)
    finally:
        state["now"] -= 1
    return {{"max": np.array([state["max"]])}}
serve(handle, service="model", ready_file={ready!r}, uds_path={uds!r})
"""


def test_an_endpoint_at_its_advertised_capacity_is_not_sent_more(
    serve_process: Callable[[str], ServeProcess], tmp_path: Path
) -> None:
    replicas = [serve_process(COUNTING) for _ in range(2)]
    rows = "".join(
        f"    - {{id: r{i}, address: 127.0.0.1, port: {r.mesh.rsplit(':', 1)[1]},"
        " meta: {capacity: 1}}\n"
        for i, r in enumerate(replicas)
    )
    path = tmp_path / "mesh.yaml"
    path.write_text(f"services:\n  model:\n{rows}")

    async def two_callers() -> list[int]:
        async with MeshClient(discovery=f"static://{path}", shm_dir="") as client:

            async def caller() -> list[int]:
                return [
                    int((await client.infer("model", {"x": np.ones(1)}, timeout=5))["max"][0])
                    for _ in range(6)
                ]

            first, second = await asyncio.gather(caller(), caller())
            return first + second

    assert max(asyncio.run(two_callers())) == 1  # never two at once on one replica
    for replica in replicas:
        assert replica.stop() == 0


MODEL = """
import asyncio
from sidecar import serve
async def handle(inputs):
    if "fail" in inputs:
        raise RuntimeError("the model is broken")
    if "slow" in inputs:
        await asyncio.sleep(0.3)
    return dict(inputs)
serve(handle, service="model", ready_file={ready!r}, uds_path={uds!r})
"""


def _front(app: ServeProcess, tmp_path: Path, *flags: str) -> Sidecar:
    """`sidecar run` in front of `app`, with a static registry of its own."""
    mesh, ready, log = tmp_path / "mesh.yaml", tmp_path / "sidecar.json", tmp_path / "sidecar.log"
    mesh.write_text("services: {}\n")
    argv = [sys.executable, "-m", "sidecar", "run", "--service", "model",
            "--app", f"tcp://{app.mesh}", "--discovery", f"static://{mesh}",
            "--mesh-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
            "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0",
            "--ready-file", str(ready), "--app-health-interval", "0.2",
            "--log-format", "text", *flags]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=child_env(), stdout=out, stderr=subprocess.STDOUT)
    wait_for(lambda: ready.exists() or proc.poll() is not None, 30, "the sidecar's ready file")
    assert proc.poll() is None, log.read_text()[-3000:]
    return Sidecar(proc, json.loads(ready.read_text()), log)


def test_a_sidecar_sheds_over_its_services_queue_limit_and_pings_tell_load_and_health(
    serve_process: Callable[[str], ServeProcess], tmp_path: Path
) -> None:
    app = serve_process(MODEL)
    limit = json.dumps({"model": {"queue_limit": 1}, "other": {"queue_limit": 9}})
    front = _front(app, tmp_path, "--queue-limit", "5", "--services", limit)
    try:
        wait_for(lambda: front.admin("/readyz")[0] == 200, 20, "the app's probe to pass")
        asyncio.run(_shed_and_ping(front.mesh))
        assert front.stop() == 0
    finally:
        if front.proc.poll() is None:
            front.proc.kill()
            front.proc.wait()
    assert app.stop() == 0


async def _shed_and_ping(mesh: str) -> None:
    import transport

    link = await transport.connect(mesh)
    loop = asyncio.get_running_loop()

    async def pong() -> dict[str, object]:
        reply = await link.request(transport.Header(transport.Kind.PING), deadline=loop.time() + 5)
        return reply.header.params

    try:
        assert await pong() == {"healthy": True, "load": [0, 1]}  # the service's own limit
        header = transport.Header(transport.Kind.REQUEST, service="model", method="infer")
        reply = await link.request(header, deadline=loop.time() + 5)
        assert reply.header.params["load"] == [1, 1]  # replies tell it too, this one counted
        async with MeshClient(mesh, shm_dir="") as client, asyncio.timeout(10):
            calls = [client.infer("model", {"slow": np.ones(1)}, timeout=5) for _ in range(2)]
            results = await asyncio.gather(*calls, return_exceptions=True)
            errors = [r for r in results if isinstance(r, Exception)]
            assert len(errors) == 1 and "overloaded" in str(errors[0]), results
            for _ in range(5):  # the app answers its probe all along
                with pytest.raises(HandlerError):
                    await client.infer("model", {"fail": np.ones(1)})
            assert await pong() == {"healthy": False, "load": [0, 1]}
            await client.infer("model", {"x": np.ones(1)})
            assert (await pong())["healthy"] is True
    finally:
        await link.aclose()

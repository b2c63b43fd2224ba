"""The Consul registry backend, on py-consul's asyncio client (consul-api.md §5).

Registration: one service per endpoint with a TTL check that starts critical; a keeper
task passes it (or fails it) every `keepalive` seconds according to the last
`set_health`, and re-registers when the agent has forgotten us (404, or the legacy 500,
on a TTL update: §2.4, §3.7) or every `resync` seconds. Watches are blocking queries on
`/v1/health/service/<name>?passing` with the index rules of §4.

py-consul raises its own exceptions, aiohttp's and builtin TimeoutError (§5): all three are
translated here to RegistryUnavailable (transient: connection, 5xx, 429, timeout) or
RegistryRejected (other 4xx).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import warnings
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import aiohttp
import consul.aio
from consul import exceptions as consul_errors

from ._consul_records import (
    CHECK_NOTE,
    TokenBucket,
    backoff,
    check_id,
    endpoints_from_health,
    go_duration,
    next_index,
    parse_index,
    registration,
)
from ._endpoint import Endpoint
from ._errors import RecordError, RegistryRejected, RegistryUnavailable
from ._registry import Outage, WatchEvent
from ._uri import ConsulUri

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ConsulRegistry:
    """Registry on a Consul agent's HTTP API. Use as an async context manager.

    `ttl`: the TTL of each endpoint's check; `deregister_after`: how long a critical check
    may last before the agent removes the service (the agent raises it to at least 1 min);
    `wait`: the blocking-query wait, kept below the client's own timeout.
    """

    def __init__(
        self,
        uri: ConsulUri,
        *,
        ttl: float = 10.0,
        deregister_after: float = 60.0,
        wait: float = 30.0,
        keepalive: float | None = None,
        resync: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < wait <= 240:
            raise ValueError(f"wait={wait} s must be in (0, 240] (consul-api.md §5)")
        self.uri = uri
        self._ttl = ttl
        self._deregister_after = deregister_after
        self._wait = wait
        # Pass well inside the TTL, and often enough to re-register within a few seconds of
        # an agent restart.
        self._keepalive = keepalive if keepalive is not None else min(ttl / 3, 2.0)
        self._resync = resync
        self._rng = rng or random.Random()
        self._client: consul.aio.Consul | None = None
        self._mine: dict[str, Endpoint] = {}
        self._healthy: dict[str, tuple[bool, str]] = {}
        self._keeper: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()

    async def __aenter__(self) -> ConsulRegistry:
        self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _open(self) -> consul.aio.Consul:
        if self._client is None:
            # py-consul builds its aiohttp connector with a deprecated argument (§5).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                self._client = consul.aio.Consul(
                    host=self.uri.host,
                    port=self.uri.port,
                    scheme=self.uri.scheme,
                    token=self.uri.token or None,
                    connections_timeout=self._wait * 17 / 16 + 5,
                )
        return self._client

    async def register(self, endpoint: Endpoint) -> None:
        """Register `endpoint` with a critical TTL check; `set_health(id, True)` passes it."""
        self._mine[endpoint.id] = endpoint
        self._healthy.setdefault(endpoint.id, (False, ""))
        try:
            await self._register(endpoint)
        except BaseException:
            self._mine.pop(endpoint.id, None)
            self._healthy.pop(endpoint.id, None)
            raise
        if self._keeper is None:
            self._keeper = asyncio.get_running_loop().create_task(
                self._keep(), name="consul-keeper"
            )

    async def deregister(self, endpoint_id: str) -> None:
        """Remove the endpoint from the agent (an unknown id is not an error)."""
        self._mine.pop(endpoint_id, None)
        self._healthy.pop(endpoint_id, None)
        client = self._open()
        await _translate(client.agent.service.deregister(endpoint_id, token=self._token))

    async def set_health(self, endpoint_id: str, healthy: bool, note: str = "") -> None:
        """Pass or fail the endpoint's TTL check now, and keep doing so."""
        if endpoint_id not in self._mine:
            raise KeyError(f"endpoint {endpoint_id!r} was not registered here")
        self._healthy[endpoint_id] = (healthy, note)
        await self._refresh(endpoint_id)

    async def aclose(self) -> None:
        """Deregister every endpoint registered here (bounded), stop the keeper, close."""
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        if self._client is None:
            return
        try:
            async with asyncio.timeout(5.0):
                for endpoint_id in list(self._mine):
                    with contextlib.suppress(RegistryUnavailable, RegistryRejected):
                        await self.deregister(endpoint_id)
        except TimeoutError:
            logger.warning("consul deregistration timed out", extra={"left": list(self._mine)})
        finally:
            client, self._client = self._client, None
            await client.close()

    async def watch(self, service: str) -> AsyncIterator[WatchEvent]:
        """Blocking queries on the passing instances of `service` (§4 index rules).

        An agent back from a restart (seen as a failed query, or as its index going backwards)
        lists nothing until the services re-register, which every live registrant does within
        its TTL. Until `ttl` seconds after the agent answers again, an empty answer keeps the
        last good set (the outage goes on); a non-empty one is believed at once.
        """
        client = self._open()
        index, attempt, last, down = 0, 0, None, False
        recovering_until = 0.0  # monotonic; empty answers are not believed before it
        # A registration is two writes (register, then pass): a burst of 4 lets it be seen at
        # once; sustained churn is paced to one query a second (consul-api.md §4).
        bucket = TokenBucket(burst=4.0, rate=1.0)
        while True:
            await asyncio.sleep(bucket.delay(time.monotonic()))  # paces churn, 0 otherwise
            grace = recovering_until - time.monotonic()
            wait = min(self._wait, grace) if grace > 0 else self._wait
            try:
                received, entries = await _translate(
                    client.health.service(
                        service,
                        index=str(index) if index else None,
                        wait=go_duration(max(wait, 0.1)),
                        passing=True,
                        token=self._token,
                    )
                )
                snapshot = endpoints_from_health(service, entries)
                new = parse_index(received)
            except (RegistryUnavailable, RegistryRejected, RecordError) as exc:
                if not down:
                    logger.warning(
                        "consul watch failing", extra={"service": service, "error": str(exc)}
                    )
                    down = True
                    yield Outage(f"consul at {self.uri.host}:{self.uri.port}: {exc}")
                await asyncio.sleep(backoff(attempt, self._rng.random()))
                attempt += 1
                # The agent may have restarted with its index starting over: a blocking query
                # with our old, higher index would wait out its whole `wait` (found by the
                # soak: a caller stuck for minutes on its last good set). Read afresh.
                index = 0
                recovering_until = -1.0  # set when the agent answers again
                continue
            attempt = 0
            now = time.monotonic()
            if recovering_until < 0 or new < index:  # back from an outage, or restarted
                recovering_until = now + self._ttl
            index = next_index(index, new)
            if (
                not snapshot.endpoints
                and last is not None
                and last.endpoints
                and now < recovering_until
            ):
                if not down:
                    down = True
                    yield Outage(f"consul at {self.uri.host}:{self.uri.port} restarted")
                continue  # the registrants have not come back yet: keep the last good set
            if down or snapshot != last:
                if down:
                    logger.info("consul watch recovered", extra={"service": service})
                down, last = False, snapshot
                yield snapshot

    @property
    def _token(self) -> str | None:
        # Per call, so CONSUL_HTTP_TOKEN cannot override a token given in the URI (§5).
        return self.uri.token or None

    async def _register(self, endpoint: Endpoint) -> None:
        client = self._open()
        body = registration(endpoint, self._ttl, self._deregister_after)
        await _translate(client.agent.service.register(**body, token=self._token))

    async def _refresh(self, endpoint_id: str) -> None:
        """Push the endpoint's health to its TTL check; re-register if the agent lost it."""
        healthy, note = self._healthy.get(endpoint_id, (False, ""))
        client = self._open()
        update = client.agent.check.ttl_pass if healthy else client.agent.check.ttl_fail
        try:
            found = await _translate(
                update(check_id(endpoint_id), notes=note or CHECK_NOTE, token=self._token)
            )
        except RegistryUnavailable as exc:
            if "does not have associated TTL" not in str(exc):  # legacy "unknown check" (§2.4)
                raise
            found = False
        if found or endpoint_id not in self._mine:
            return
        logger.info("consul lost our registration; registering again", extra={"id": endpoint_id})
        await self._register(self._mine[endpoint_id])
        await _translate(update(check_id(endpoint_id), notes=note or CHECK_NOTE, token=self._token))

    async def _keep(self) -> None:
        """Keep every registered endpoint's check in step with its health, forever."""
        last_resync = time.monotonic()
        failing = False
        while True:
            await asyncio.sleep(self._keepalive)
            resync = time.monotonic() - last_resync >= self._resync
            try:
                for endpoint_id in list(self._mine):
                    if resync:
                        await self._register(self._mine[endpoint_id])
                    await self._refresh(endpoint_id)
            except (RegistryUnavailable, RegistryRejected) as exc:
                if not failing:
                    logger.warning("consul keepalive failing", extra={"error": str(exc)})
                failing = True
                continue
            if resync:
                last_resync = time.monotonic()
            if failing:
                logger.info("consul keepalive recovered")
                failing = False


async def _translate(call: Awaitable[T]) -> T:
    """Await a py-consul call, turning its three families of errors into ours (§5)."""
    try:
        return await call
    except (
        consul_errors.ACLPermissionDenied,
        consul_errors.ACLDisabled,
        consul_errors.BadRequest,
    ) as exc:
        raise RegistryRejected(f"consul refused the request: {exc}") from exc
    except consul_errors.ClientError as exc:
        if str(exc).startswith("429"):
            raise RegistryUnavailable(f"consul is rate limiting: {exc}") from exc
        raise RegistryRejected(f"consul refused the request: {exc}") from exc
    except consul_errors.ConsulException as exc:  # 5xx, 599, bad JSON, missing index header
        raise RegistryUnavailable(f"consul failed: {exc}") from exc
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise RegistryUnavailable(f"consul unreachable: {exc!r}") from exc

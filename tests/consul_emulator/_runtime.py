"""The agent's moving parts around the pure state: timers, probes, blocking-read wake-ups.

`AgentRuntime` owns one timer for the state's next deadline (TTL expiry, deferred output sync),
one periodic reaper timer (§3.4), one task per probed check, and the event blocking reads wait
on (§4). `resume()` starts them inside a running loop; `pause()` cancels them and awaits every
task. The state itself survives a pause. Every state change goes through `commit()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

import aiohttp

from ._definition import CheckType
from ._duration import SECOND
from ._probes import probe
from ._state import OUTPUT_MAX, AgentState

logger = logging.getLogger(__name__)

MIN_CHECK_INTERVAL = 1.0  # checks.MinInterval: shorter intervals run every second (§2.1)


class AgentRuntime:
    """Timers, probes and change notification for one `AgentState`."""

    def __init__(self, state: AgentState, *, reap_interval: float, rng: random.Random) -> None:
        self.state = state
        self._reap_interval = reap_interval
        self._rng = rng
        self._changed = asyncio.Event()
        self._seen_index = state.index
        self._tick: tuple[float, asyncio.TimerHandle] | None = None
        self._reaper: asyncio.TimerHandle | None = None
        self._probes: dict[str, tuple[int, asyncio.Task[None]]] = {}
        self._retired: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._active = False
        self.waiting_reads = 0

    def now(self) -> float:
        """The clock every deadline in the state is on."""
        return asyncio.get_running_loop().time()

    def resume(self) -> None:
        """Start the timers and probes (the agent process is up)."""
        # Checks open a fresh connection each time (the agent disables keep-alives for them).
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        self._changed = asyncio.Event()  # bound to this loop on first wait; a new one per start
        self._active = True
        self._schedule_reap(self.now())
        self.commit()

    async def pause(self) -> None:
        """Stop timers and probes and wait for the probe tasks to end (the process is down)."""
        self._active = False  # from here on, commits start nothing
        if self._tick is not None:
            self._tick[1].cancel()
            self._tick = None
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        tasks = [task for _, task in self._probes.values()] + list(self._retired)
        self._probes.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def commit(self) -> None:
        """After any state change: wake blocking reads, re-arm the deadline, match probes."""
        if self.state.index != self._seen_index:
            self._seen_index = self.state.index
            self._changed.set()
            self._changed = asyncio.Event()
        if self._active:
            self._arm_tick()
            self._match_probes()

    async def wait_past(self, index: int, timeout: float) -> None:
        """Return once the catalog index exceeds `index`, or after `timeout` seconds (§4)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.waiting_reads += 1
        try:
            while self.state.index <= index:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)
        finally:
            self.waiting_reads -= 1

    # -- timers ---------------------------------------------------------------------------

    def _arm_tick(self) -> None:
        deadline = self.state.next_deadline()
        if self._tick is not None:
            if self._tick[0] == deadline:
                return
            self._tick[1].cancel()
            self._tick = None
        if deadline is not None:
            handle = asyncio.get_running_loop().call_at(deadline, self._on_tick, deadline)
            self._tick = (deadline, handle)

    def _on_tick(self, deadline: float) -> None:
        self._tick = None
        # call_at may run a hair early; the deadline itself has come.
        self.state.tick(max(self.now(), deadline))
        self.commit()

    def _schedule_reap(self, last: float) -> None:
        at = last + self._reap_interval
        self._reaper = asyncio.get_running_loop().call_at(at, self._on_reap, at)

    def _on_reap(self, at: float) -> None:
        for service_id in self.state.reap(self.now()):
            logger.info("service reaped", extra={"service": service_id})
        self.commit()
        self._schedule_reap(at)

    # -- probes ---------------------------------------------------------------------------

    def _match_probes(self) -> None:
        wanted = {check.id: check for check in self.state.probe_checks()}
        for check_id, (generation, task) in list(self._probes.items()):
            check = wanted.get(check_id)
            if check is None or check.generation != generation:
                del self._probes[check_id]
                task.cancel()
                self._retired.add(task)
                task.add_done_callback(self._retired.discard)
        for check_id, check in wanted.items():
            if check_id not in self._probes:
                coro = self._run_probe(check_id, check.generation, check.definition)
                task = asyncio.get_running_loop().create_task(coro, name=f"probe {check_id}")
                self._probes[check_id] = (check.generation, task)

    async def _run_probe(self, check_id: str, generation: int, spec: CheckType) -> None:
        interval = max(spec.interval / SECOND, MIN_CHECK_INTERVAL)
        limit = min(OUTPUT_MAX, spec.output_max_size) if spec.output_max_size > 0 else OUTPUT_MAX
        # The first run comes after a random part of the interval (lib.RandomStagger).
        await asyncio.sleep(self._rng.random() * interval)
        while self._active and self._session is not None:
            status, output = await probe(spec, self._session, limit)
            self.state.record_probe(check_id, generation, status, output, self.now())
            self.commit()
            await asyncio.sleep(interval)

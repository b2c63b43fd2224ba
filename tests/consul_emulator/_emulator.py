"""`ConsulEmulator`: the agent subset of consul-api.md behind a real aiohttp listener.

Lifecycle as a single -dev agent lives it: `start()` binds (port 0 picks one, then the port is
kept), `stop()` is the process going away (listener closed, open connections dropped, pending
blocking reads cut, timers and checks stopped, state kept), `restart()` brings it back on the
same port, forgetting everything and restarting the index low unless `forget=False` (an agent
with a data-dir, §3.7).
"""

from __future__ import annotations

import ipaddress
import random
from types import TracebackType
from typing import Final

from aiohttp import web

from . import _views as views
from ._acl import Acl
from ._api import Api
from ._mux import Mux
from ._runtime import AgentRuntime
from ._state import AgentState

_SHUTDOWN_TIMEOUT: Final = 0.05  # seconds aiohttp waits for each open request before cutting it
_MAX_BODY: Final = 64 << 20  # the agent has no small body limit; aiohttp's default is 1 MiB


class ConsulEmulator:
    """A Consul agent HTTP API stand-in for tests; agent defaults unless told otherwise.

    `reap_interval` and `min_deregister_after` are the agent's 30 s and 1 m (§3.4);
    `acl_tokens` turns ACLs on with those tokens valid (§3.8); `wait_jitter` adds up to
    wait/16 to blocking reads (§4); `check_update_interval` defers output-only check syncs
    (§3.6; 0 syncs at once).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        reap_interval: float = 30.0,
        min_deregister_after: float = 60.0,
        acl_tokens: frozenset[str] | None = None,
        wait_jitter: bool = True,
        node: str = "emulator",
        check_update_interval: float = 300.0,
    ) -> None:
        self._host = host
        self._port = port
        self._rng = random.Random()
        state = AgentState(
            node=node,
            address=_node_address(host),
            min_deregister_after=min_deregister_after,
            check_update_interval=check_update_interval,
            rng=self._rng,
        )
        self._runtime = AgentRuntime(state, reap_interval=reap_interval, rng=self._rng)
        acl = Acl(acl_tokens)
        api = Api(self._runtime, acl, wait_jitter=wait_jitter, rng=self._rng)
        self._mux = Mux(api.routes(), acl.default_policy)
        self._runner: web.AppRunner | None = None
        self._started_once = False
        self._forget_on_start = False

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The bound port (the requested one before the first `start()`)."""
        return self._port

    @property
    def address(self) -> str:
        """`"HOST:PORT"`, as `CONSUL_HTTP_ADDR` takes it."""
        return f"{self._host}:{self._port}"

    @property
    def index(self) -> int:
        """The catalog's current index (what `X-Consul-Index` reports)."""
        return self._runtime.state.index

    @property
    def waiting_reads(self) -> int:
        """Blocking reads parked on the index right now (lets a test act once a watch waits)."""
        return self._runtime.waiting_reads

    async def start(self) -> None:
        """Bind and serve; after a `stop()`, come back on the same port (an agent restart)."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._mux.dispatch)
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
            handler_cancellation=True,  # a client that hangs up ends its blocking read
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._port = runner.addresses[0][1]
        self._runner = runner
        if self._started_once:
            self._runtime.state.restart(self._runtime.now(), forget=self._forget_on_start)
        self._started_once, self._forget_on_start = True, False
        self._runtime.resume()

    async def stop(self) -> None:
        """Stop listening and drop open connections (blocking reads included); keep state."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await runner.cleanup()  # listener first: nothing new arrives while the rest stops
        await self._runtime.pause()

    async def restart(self, *, forget: bool = True) -> None:
        """Stop (if running) and start on the same port; `forget` as a -dev agent does."""
        await self.stop()
        self._forget_on_start = forget
        await self.start()

    async def __aenter__(self) -> ConsulEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def services(self) -> dict[str, dict[str, object]]:
        """The agent's services as `GET /v1/agent/services` shows them (a copy)."""
        services = self._runtime.state.services
        return {sid: views.agent_service(services[sid]) for sid in sorted(services)}

    def checks(self) -> dict[str, dict[str, object]]:
        """The agent's checks as `GET /v1/agent/checks` shows them (a copy)."""
        state = self._runtime.state
        return {
            cid: views.agent_check(state.checks[cid], state.node) for cid in sorted(state.checks)
        }


def _node_address(host: str) -> str:
    """The node's advertised address: the bind host when it is a specific IP."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "127.0.0.1"
    return "127.0.0.1" if ip.is_unspecified else str(ip)

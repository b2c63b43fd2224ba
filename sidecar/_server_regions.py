"""The client's shared-memory regions registered with the model server too, where both see
the same /dev/shm.

A client of a sidecar fronting Triton registers its system shared-memory regions with the
sidecar (the sidecar's OIP front door serves the extension). When the model server maps
the same shared-memory objects (it runs on this host with the same /dev/shm: one machine,
or containers sharing an IPC namespace or a tmpfs there), the sidecar need not touch the
tensors at all: it registers each region with the server under an alias (same key, offset
and size) and passes the request on naming the aliases, and the server reads the inputs
from and writes the outputs into the client's memory itself, as if called directly.

Whether the server sees our /dev/shm is found out once, with a probe object of our own
(`probe`); until then, and if it does not, requests naming regions take the front door
(which reads the regions itself). An alias is registered on first use and unregistered
with the server when the client unregisters the region (or it is reaped, or the sidecar
stops). A server that lost its aliases (restarted) gets them again: `forget` drops them
all, and the next request registers them anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from typing import Final

from .oip import RegionStatus

logger = logging.getLogger(__name__)

PROBE_SIZE: Final = 4096
ALIAS_PREFIX: Final = "arrowmesh"

# Register region (its status) with the server under a name; raises NotShared when the
# server refuses (cannot map it), OSError/ConnectionError when it cannot be reached.
Register = Callable[[str, RegionStatus], Awaitable[None]]
Unregister = Callable[[str], Awaitable[None]]


class NotShared(Exception):
    """The server cannot map a region: it does not see our /dev/shm (or refuses)."""


class ServerRegions:
    """Aliases of the client's regions on the model server (see the module doc).

    `register` and `unregister` are the server's shared-memory calls (HTTP or gRPC);
    `directory` is where our shm_open puts objects (the registry's)."""

    def __init__(self, register: Register, unregister: Unregister, directory: str) -> None:
        self._register_call = register
        self._unregister = unregister
        self._directory = directory
        self.shared: bool | None = None  # None: not probed yet
        self._probing: asyncio.Task[None] | None = None
        self._aliases: dict[RegionStatus, asyncio.Task[str]] = {}
        self._count = itertools.count(1)
        self._prefix = f"{ALIAS_PREFIX}-{os.getpid()}-{secrets.token_hex(3)}"
        self._dropping: set[asyncio.Task[None]] = set()

    def start_probe(self) -> None:
        """Find out (in the background) whether the server maps our shared memory."""
        if self._probing is None and self.shared is None:
            self._probing = asyncio.get_running_loop().create_task(
                self._probe(), name="oip-shm-probe"
            )

    async def alias(self, region: RegionStatus) -> str:
        """The server's name for `region`, registered there on first use. Raises NotShared
        when the server cannot map it (and OSError/ConnectionError when unreachable)."""
        task = self._aliases.get(region)
        if task is None:
            name = f"{self._prefix}-{next(self._count)}"
            task = asyncio.get_running_loop().create_task(self._register(name, region))
            self._aliases[region] = task
        try:
            return await asyncio.shield(task)
        except BaseException:
            if task.done() and self._aliases.get(region) is task:
                del self._aliases[region]
            raise

    def released(self, region: RegionStatus) -> None:
        """The client's region is gone from the sidecar: unregister its alias (background)."""
        task = self._aliases.pop(region, None)
        if task is not None:
            self._drop_later(task)

    def forget(self) -> None:
        """The server lost our aliases (it restarted): register them again when next used."""
        aliases, self._aliases = self._aliases, {}
        for task in aliases.values():
            self._drop_later(task)

    async def aclose(self) -> None:
        """Unregister every alias (bounded), stop the probe."""
        if self._probing is not None:
            self._probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probing
        self.forget()
        if self._dropping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await asyncio.gather(*self._dropping, return_exceptions=True)

    # Server calls

    async def _register(self, name: str, region: RegionStatus) -> str:
        await self._register_call(name, region)
        return name

    def _drop_later(self, registering: asyncio.Task[str]) -> None:
        async def drop() -> None:
            try:
                name = await registering
            except BaseException:  # never registered: nothing to undo
                return
            with contextlib.suppress(Exception):  # a server gone forgets it anyway
                await self._unregister(name)

        task = asyncio.get_running_loop().create_task(drop())
        self._dropping.add(task)
        task.add_done_callback(self._dropping.discard)

    async def _probe(self) -> None:
        key = f"/{self._prefix}-probe"
        path = os.path.join(self._directory, key.lstrip("/"))
        try:
            await asyncio.to_thread(_make_object, path, PROBE_SIZE)
        except OSError as exc:
            self.shared = False
            logger.info("no shared memory to probe the app with", extra={"error": str(exc)})
            return
        try:
            probe = RegionStatus(key, key, 0, PROBE_SIZE)
            try:
                await self._register(f"{self._prefix}-probe", probe)
            except NotShared as exc:
                self.shared = False
                logger.info(
                    "the app does not map our shared memory: requests naming regions are"
                    " read by the sidecar and sent on",
                    extra={"answer": str(exc)},
                )
            except (OSError, ConnectionError) as exc:
                logger.debug("shared-memory probe failed; trying again later", exc_info=exc)
            else:
                self.shared = True
                logger.info("the app maps our shared memory: regions are passed on by name")
                with contextlib.suppress(Exception):
                    await self._unregister(f"{self._prefix}-probe")
        finally:
            self._probing = None
            with contextlib.suppress(OSError):
                await asyncio.to_thread(os.unlink, path)


def _make_object(path: str, size: int) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)

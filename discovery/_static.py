"""The static registry: a YAML or JSON file of endpoints per service, reloaded on change.

    services:
      embedder:
        - {id: embedder-1, address: 10.0.0.5, port: 7700, protocol: mesh,
           meta: {shm_domain: host-a, zone: a, weight: 2}}

The file is the truth for what it lists. A bad edit is logged and reported as an `Outage`;
watches keep the last good content. Endpoints registered through the API (a process serving
without a registry) are kept in memory beside the file's and follow `set_health`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import yaml

from ._endpoint import Endpoint
from ._errors import RecordError
from ._registry import Outage, Snapshot, WatchEvent, sorted_endpoints
from ._yaml import load_bounded

logger = logging.getLogger(__name__)

MAX_FILE_SIZE = 16 << 20  # a static mesh is a config file, not a database
_ENTRY_KEYS = frozenset({"id", "address", "port", "protocol", "meta"})

Services = Mapping[str, tuple[Endpoint, ...]]


def parse_static(text: bytes, origin: str) -> dict[str, tuple[Endpoint, ...]]:
    """Parse a static mesh file; raises RecordError naming the first thing wrong."""
    if len(text) > MAX_FILE_SIZE:
        raise RecordError(f"{origin} is {len(text)} bytes, over {MAX_FILE_SIZE}")
    try:
        document = load_bounded(text)
    except (yaml.YAMLError, ValueError, AttributeError) as exc:
        # PyYAML raises ValueError/AttributeError for some scalars (`2001-02-30`, `!!int '0x'`).
        detail = " ".join(str(exc).split())[:300]
        raise RecordError(f"{origin} is not valid YAML or JSON: {detail}") from None
    if not isinstance(document, dict) or not isinstance(document.get("services"), dict):
        raise RecordError(f"{origin} must be a mapping with a 'services' mapping")
    services: dict[str, tuple[Endpoint, ...]] = {}
    for name, entries in document["services"].items():
        where = f"{origin}: services.{name}"
        if not isinstance(name, str) or not isinstance(entries, list):
            raise RecordError(f"{where} must be a list of endpoints")
        endpoints = [_entry(str(name), entry, f"{where}[{i}]") for i, entry in enumerate(entries)]
        ids = [e.id for e in endpoints]
        if len(set(ids)) != len(ids):
            raise RecordError(f"{where} lists an endpoint id twice")
        services[name] = sorted_endpoints(endpoints)
    return services


def _entry(service: str, entry: object, where: str) -> Endpoint:
    if not isinstance(entry, dict):
        raise RecordError(f"{where} must be a mapping with id, address and port")
    unknown = set(entry) - _ENTRY_KEYS
    missing = {"id", "address", "port"} - set(entry)
    if unknown or missing:
        raise RecordError(
            f"{where}: unknown keys {sorted(map(str, unknown))}, missing {sorted(missing)}"
        )
    meta = entry.get("meta") or {}
    if not isinstance(meta, dict):
        raise RecordError(f"{where}.meta must be a mapping")
    if "protocol" in entry:
        meta = {**meta, "protocol": entry["protocol"]}
    port, address = entry["port"], entry["address"]
    if not isinstance(port, int) or isinstance(port, bool) or not isinstance(address, str):
        raise RecordError(f"{where}: port must be an integer and address a string")
    try:
        strings = {str(k): _scalar(v, f"{where}.meta.{k}") for k, v in meta.items()}
        endpoint_id = _scalar(entry["id"], f"{where}.id")
        return Endpoint.from_record(service, endpoint_id, address, port, strings)
    except RecordError as exc:
        raise RecordError(f"{where}: {exc}") from None


def _scalar(value: object, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise RecordError(f"{where} must be a string or a number")
    return str(value)


@dataclass(frozen=True, slots=True)
class _Stamp:
    """What tells a changed file: replacing it (editors, ConfigMaps) changes the inode."""

    inode: int
    size: int
    mtime_ns: int


class StaticRegistry:
    """Registry backed by a file; `poll_interval` is how often the file is checked."""

    def __init__(self, path: str, *, poll_interval: float = 0.5) -> None:
        self.path = path
        self._poll_interval = poll_interval
        self._stamp: _Stamp | None = None
        self._services: dict[str, tuple[Endpoint, ...]] = {}
        self._error = ""
        self._loaded = False
        self._lock = asyncio.Lock()
        self._local: dict[str, Endpoint] = {}
        self._sick: set[str] = set()
        self._changed = asyncio.Event()

    async def __aenter__(self) -> StaticRegistry:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def register(self, endpoint: Endpoint) -> None:
        """Add `endpoint` to what watches in this process see (unhealthy until set so)."""
        self._local[endpoint.id] = endpoint
        self._sick.add(endpoint.id)
        self._notify()

    async def deregister(self, endpoint_id: str) -> None:
        """Remove an endpoint registered here; unknown ids are ignored."""
        self._local.pop(endpoint_id, None)
        self._sick.discard(endpoint_id)
        self._notify()

    async def set_health(self, endpoint_id: str, healthy: bool, note: str = "") -> None:
        """Show or hide an endpoint registered here."""
        if endpoint_id not in self._local:
            raise KeyError(f"endpoint {endpoint_id!r} was not registered here")
        (self._sick.discard if healthy else self._sick.add)(endpoint_id)
        self._notify()

    async def aclose(self) -> None:
        """Forget the endpoints registered here."""
        self._local.clear()
        self._sick.clear()
        self._notify()

    async def watch(self, service: str) -> AsyncIterator[WatchEvent]:
        """The file's endpoints of `service` plus those registered here, on every change."""
        last: Snapshot | None = None
        reported = ""  # the error this watch last reported as an outage
        while True:
            changed = self._changed
            await self._reload()
            if self._error:
                if self._error != reported:
                    reported = self._error
                    yield Outage(self._error)  # the last good set stays in use
            else:
                snapshot = self._snapshot(service)
                if snapshot != last or reported:
                    last, reported = snapshot, ""
                    yield snapshot
            try:
                async with asyncio.timeout(self._poll_interval):
                    await changed.wait()
            except TimeoutError:
                pass

    def _snapshot(self, service: str) -> Snapshot:
        local = [e for e in self._local.values() if e.service == service and e.id not in self._sick]
        from_file = [e for e in self._services.get(service, ()) if e.id not in self._local]
        return Snapshot(sorted_endpoints(from_file + local))

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _reload(self) -> None:
        """Read the file again if it changed (once for all watches)."""
        async with self._lock:
            try:
                stamp, text = await asyncio.to_thread(self._read_if_changed, self._stamp)
            except OSError as exc:
                self._fail(f"static file {self.path}: {exc.strerror or exc}")
                return
            if stamp is None:
                return
            self._stamp = stamp
            try:
                services = parse_static(text, self.path)
            except RecordError as exc:
                self._fail(str(exc))
                return
            if self._error:
                logger.info("static file good again", extra={"path": self.path})
            self._services, self._error, self._loaded = services, "", True
            self._notify()

    def _fail(self, error: str) -> None:
        if error != self._error:
            logger.error(
                "static file rejected; keeping the last good content",
                extra={"path": self.path, "error": error},
            )
            self._error = error
            self._notify()

    def _read_if_changed(self, known: _Stamp | None) -> tuple[_Stamp | None, bytes]:
        st = os.stat(self.path)
        stamp = _Stamp(st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == known:
            return None, b""
        with open(self.path, "rb") as f:
            return stamp, f.read(MAX_FILE_SIZE + 1)

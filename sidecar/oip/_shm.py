"""The system shared-memory extension: regions a client made, mapped here by name.

A client creates a POSIX shared-memory object (`shm_open`, as
`tritonclient.utils.shared_memory` does), registers a region of it under a name, and then
names that region, an offset and a size for inputs to read and outputs to write in place.

Invariants:
- The registry is used from one event loop only; opening and mapping a region (file
  system calls) run in a worker thread, nothing else blocks.
- A region is mapped once, at registration, and unmapped when unregistered (by name or
  all), when the registry closes, or when the client has gone: a reaper looks every
  `reap_interval` for regions whose object was unlinked (destroyed by the client, or
  replaced by another of the same key) and unregisters them.
- A request borrows the regions it uses; a region unregistered while borrowed is gone
  from the names at once and unmapped when the last borrower returns it, so a request
  never sees its memory vanish.
- Keys are names of objects in `directory` (/dev/shm, where `shm_open` puts them); a key
  with a '/' after its leading ones, or "." or "..", is refused, so no other file opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from transport import ErrorCode

from ._errors import OipError
from ._model import ShmRef

logger = logging.getLogger(__name__)

SHM_DIRECTORY: Final = "/dev/shm"
# A client that registers without unregistering would otherwise grow our mappings (and
# open files while registering) without bound.
MAX_REGIONS: Final = 1024
_MAX_KEY: Final = 255  # NAME_MAX
# How often regions are checked for objects the client unlinked (one stat per region).
REAP_INTERVAL: Final = 2.0

Bytes = npt.NDArray[np.uint8]
_Mapped = tuple[mmap.mmap, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class RegionStatus:
    """A registered region: its name, the key of its object, offset and size in it."""

    name: str
    key: str
    offset: int
    byte_size: int


class _Region:
    __slots__ = ("borrowers", "closing", "identity", "memory", "path", "status")

    def __init__(self, status: RegionStatus, path: str, mapped: _Mapped) -> None:
        self.status = status
        self.path = path
        self.memory, self.identity = mapped
        self.borrowers = 0
        self.closing = False


class SystemShmRegistry:
    """Named, mapped regions of the client's shared-memory objects (see the module doc)."""

    def __init__(
        self,
        directory: str = SHM_DIRECTORY,
        max_regions: int = MAX_REGIONS,
        reap_interval: float = REAP_INTERVAL,
    ) -> None:
        self._directory = directory
        self._max_regions = max_regions
        self._reap_interval = reap_interval
        self._regions: dict[str, _Region] = {}
        self._registering: set[str] = set()
        self._reaper: asyncio.Task[None] | None = None
        # Called with each region's status once it is unregistered (by name, all, reaped).
        self.on_release: list[Callable[[RegionStatus], None]] = []

    @property
    def directory(self) -> str:
        """Where the objects that keys name are (shm_open's directory)."""
        return self._directory

    def __len__(self) -> int:
        return len(self._regions)

    async def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Map `byte_size` bytes at `offset` of object `key` as region `name`.

        Raises OipError when the name is taken, the object cannot be opened or the region
        is out of its bounds.
        """
        if not name:
            raise OipError.invalid("a shared-memory region needs a name")
        if name in self._regions or name in self._registering:
            raise OipError.invalid(f"shared memory region '{name}' already in manager")
        if len(self._regions) + len(self._registering) >= self._max_regions:
            raise OipError(
                ErrorCode.RESOURCE_EXHAUSTED,
                f"cannot register shared memory region '{name}': {self._max_regions} regions "
                "are registered already; unregister some first",
            )
        if type(offset) is not int or type(byte_size) is not int or offset < 0 or byte_size < 1:
            raise OipError.invalid(
                f"failed to register shared memory region '{name}': offset must be >= 0 and "
                f"byte_size >= 1, got offset {offset!r}, byte_size {byte_size!r}"
            )
        path = self._path(key)
        self._registering.add(name)
        try:
            mapped = await asyncio.to_thread(_map, path, name, key, offset, byte_size)
        finally:
            self._registering.discard(name)
        self._regions[name] = _Region(RegionStatus(name, key, offset, byte_size), path, mapped)
        logger.debug("shm region registered", extra={"region": name, "key": key})
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(
                self._reap_every(), name="oip-shm-reaper"
            )

    def status(self, name: str = "") -> list[RegionStatus]:
        """The status of region `name`, or of all regions. Raises OipError (not found)."""
        if not name:
            return [region.status for region in self._regions.values()]
        region = self._regions.get(name)
        if region is None:
            raise OipError.not_found(f"Unable to find system shared memory region: '{name}'")
        return [region.status]

    def unregister(self, name: str = "") -> None:
        """Unmap region `name` (all regions when empty); an unknown name is no error."""
        names = [name] if name else list(self._regions)
        for each in names:
            region = self._regions.pop(each, None)
            if region is not None:
                region.closing = True
                if not region.borrowers:
                    _unmap(region)
                for released in self.on_release:
                    released(region.status)

    async def aclose(self) -> None:
        """Stop the reaper and unregister every region (at shutdown)."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        self.unregister()

    async def reap(self) -> list[str]:
        """Unregister the regions whose object the client unlinked; their names."""
        regions = list(self._regions.values())
        gone = await asyncio.to_thread(_unlinked, [(r.path, r.identity) for r in regions])
        names = [r.status.name for r, lost in zip(regions, gone, strict=True) if lost]
        for name in names:
            region = self._regions.get(name)
            if region is not None and region in regions:  # not re-registered meanwhile
                logger.info("shm region released: its object is gone", extra={"region": name})
                self.unregister(name)
        return names

    async def _reap_every(self) -> None:
        while True:
            await asyncio.sleep(self._reap_interval)
            if self._regions:
                await self.reap()

    @contextlib.contextmanager
    def borrow(self, ref: ShmRef) -> Iterator[Bytes]:
        """The bytes `ref` names, as a writable uint8 view, held mapped while in use.

        Raises OipError when the region is unknown or `ref` is out of its bounds.
        """
        region = self._regions.get(ref.region)
        if region is None:
            raise OipError.not_found(f"Unable to find shared memory region: '{ref.region}'")
        size = region.status.byte_size
        if ref.offset >= size and not (ref.offset == size and ref.byte_size == 0):
            raise OipError.invalid(f"Invalid offset for shared memory region: '{ref.region}'")
        if ref.offset + ref.byte_size > size:
            raise OipError.invalid(
                f"Invalid offset + byte size for shared memory region: '{ref.region}' "
                f"(offset {ref.offset} + byte size {ref.byte_size} is beyond its {size} bytes)"
            )
        region.borrowers += 1
        try:
            start = region.status.offset + ref.offset
            yield np.frombuffer(region.memory, dtype=np.uint8, count=ref.byte_size, offset=start)
        finally:
            region.borrowers -= 1
            if region.closing and not region.borrowers:
                _unmap(region)

    def _path(self, key: str) -> str:
        name = key.lstrip("/")
        if not name or "/" in name or "\0" in name or name in (".", "..") or len(name) > _MAX_KEY:
            raise OipError.invalid(
                f"Unable to open shared memory region: '{key}' is not a shared-memory key "
                "(expected a name such as '/input_data', as shm_open takes)"
            )
        return os.path.join(self._directory, name)


def _map(path: str, name: str, key: str, offset: int, byte_size: int) -> _Mapped:
    """Open, check and map [0, offset + byte_size) of the object at `path` (blocking):
    the mapping and the object's identity (device, inode)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise OipError.invalid(
            f"Unable to open shared memory region: '{key}': {exc.strerror}"
        ) from None
    try:
        stat = os.fstat(fd)
        size = stat.st_size
        if offset + byte_size > size:
            raise OipError.invalid(
                f"failed to register shared memory region '{name}': invalid args "
                f"(offset {offset} + byte_size {byte_size} is beyond the {size} bytes of '{key}')"
            )
        # mmap offsets must be page-aligned: map from 0 and start views at `offset`.
        return mmap.mmap(fd, offset + byte_size, mmap.MAP_SHARED), (stat.st_dev, stat.st_ino)
    except OSError as exc:
        raise OipError.invalid(
            f"failed to register shared memory region '{name}': {exc.strerror}"
        ) from None
    finally:
        os.close(fd)


def _unlinked(objects: list[tuple[str, tuple[int, int]]]) -> list[bool]:
    """For each (path, identity): True if no object with that identity is at `path`."""
    out = []
    for path, identity in objects:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            out.append(True)
            continue
        except OSError:
            out.append(False)  # cannot tell: keep it
            continue
        out.append((stat.st_dev, stat.st_ino) != identity)
    return out


def _unmap(region: _Region) -> None:
    try:
        region.memory.close()
    except BufferError:
        # An array still views it (a caller kept one): the mapping goes with that array.
        logger.debug("shm region still viewed; unmapped when released",
                     extra={"region": region.status.name})  # fmt: skip
    logger.debug("shm region unregistered", extra={"region": region.status.name})

"""Arena files: pre-faulted shared memory with a lease table that peers can check.

Layout of `<dir>/<proc>-<n>.arena` (little-endian):

    0      header: magic "AMARENA1", version u32, slots u32, data offset u64, data size u64
    4096   lease table: `slots` entries of [token u64, generation u64, offset u64, length u64]
    data   the data area, page aligned, carved by a buddy allocator

Invariants:
- Only the owner process writes the header and the table; peers map the file read-only.
- A table entry is live while its token is non-zero. The owner writes offset, length and
  generation before the token, and clears the token before bumping the generation, so a
  reader that sees a live token sees the fields it was written with.
- A descriptor is honoured only if its slot is live with the same token and generation and
  its byte range lies inside that lease's block; tokens are random, so a stale or forged
  descriptor matches nothing and reads nothing.
- File names are generated here and checked against a strict pattern; a peer's string is
  never used as a path.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import secrets
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from ._buddy import Buddy, BuddyStats
from ._errors import FrameError

MAGIC: Final = b"AMARENA1"
VERSION: Final = 1
_HEADER = struct.Struct("<8sIIQQ")
_ENTRY = struct.Struct("<QQQQ")
_TABLE_OFFSET: Final = 4096
_PAGE: Final = mmap.PAGESIZE
_MADV_POPULATE_WRITE: Final = 23
NAME_PATTERN: Final = re.compile(r"^[0-9a-f]{16}-[0-9]{1,6}\.arena$")


@dataclass(frozen=True, slots=True)
class Grant:
    """A block handed out by an arena: its slot and where it lies."""

    slot: int
    offset: int
    length: int
    generation: int
    token: int


def _prefault(memory: mmap.mmap) -> None:
    try:
        memory.madvise(_MADV_POPULATE_WRITE)
    except OSError:  # kernels before 5.14: touch a byte per page instead
        np.frombuffer(memory, dtype=np.uint8)[::_PAGE] = 0


class Arena:
    """One arena file mapped into this process: the owner's (writable) or a peer's (read-only)."""

    def __init__(self, path: Path, memory: mmap.mmap, slots: int, data_offset: int, owned: bool):
        self.path = path
        self.name = path.name
        self.memory = memory
        self.slots = slots
        self.data_offset = data_offset
        self.data_size = len(memory) - data_offset
        self.owned = owned
        self.data = np.frombuffer(memory, dtype=np.uint8, offset=data_offset)
        if not owned:
            self.data.flags.writeable = False
        self.address: int = self.data.__array_interface__["data"][0]
        self._buddy = Buddy(self.data_size) if owned else None
        self._free_slots = list(range(slots - 1, -1, -1)) if owned else []
        self._lock = threading.Lock()

    @classmethod
    def create(cls, directory: Path, proc: str, index: int, data_size: int, slots: int) -> Arena:
        """Create, size and pre-fault a new arena file owned by this process."""
        data_offset = _TABLE_OFFSET + -(-slots * _ENTRY.size // _PAGE) * _PAGE
        data_size = -(-data_size // _PAGE) * _PAGE
        path = directory / f"{proc}-{index}.arena"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, data_offset + data_size)
            # Reserve the pages now: on a tmpfs too small for the arena, touching them would
            # be a SIGBUS; reserving is an OSError (ENOSPC) the caller can fall back from.
            os.posix_fallocate(fd, 0, data_offset + data_size)
            memory = mmap.mmap(fd, data_offset + data_size, mmap.MAP_SHARED)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        _prefault(memory)
        _HEADER.pack_into(memory, 0, MAGIC, VERSION, slots, data_offset, data_size)
        return cls(path, memory, slots, data_offset, owned=True)

    @classmethod
    def open_peer(cls, directory: Path, name: str) -> Arena:
        """Map a peer's arena read-only; raises FrameError if the name or file is not one."""
        if not NAME_PATTERN.match(name):
            raise FrameError(f"arena name {name[:80]!r} is not an arena name")
        path = directory / name
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise FrameError(f"arena {name} is not in the shared directory: {exc}") from None
        try:
            size = os.fstat(fd).st_size
            if size < _TABLE_OFFSET:
                raise FrameError(f"arena {name} is too small to be one ({size} bytes)")
            memory = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)
        magic, version, slots, data_offset, data_size = _HEADER.unpack_from(memory, 0)
        if magic != MAGIC or version != VERSION or data_offset + data_size != size:
            memory.close()
            raise FrameError(f"arena {name} has a bad header")
        return cls(path, memory, slots, data_offset, owned=False)

    def grant(self, nbytes: int) -> Grant | None:
        """A new lease of at least `nbytes`, or None if the arena is full (owner only)."""
        assert self._buddy is not None
        with self._lock:
            if not self._free_slots:
                return None
            offset = self._buddy.alloc(nbytes)
            if offset is None:
                return None
            slot = self._free_slots.pop()
            at = _TABLE_OFFSET + slot * _ENTRY.size
            _, generation, _, _ = _ENTRY.unpack_from(self.memory, at)
            token = secrets.randbits(64) | 1
            length = self._buddy.block(offset)
            _ENTRY.pack_into(self.memory, at, 0, generation, offset, length)
            struct.pack_into("<Q", self.memory, at, token)
        return Grant(slot, offset, length, generation, token)

    def revoke(self, grant: Grant) -> None:
        """End a lease: peers' descriptors for it stop matching; its block is free again."""
        assert self._buddy is not None
        at = _TABLE_OFFSET + grant.slot * _ENTRY.size
        with self._lock:
            struct.pack_into("<Q", self.memory, at, 0)
            _ENTRY.pack_into(self.memory, at, 0, grant.generation + 1, 0, 0)
            self._buddy.free(grant.offset)
            self._free_slots.append(grant.slot)

    def check(self, slot: int, generation: int, token: int, offset: int, nbytes: int) -> None:
        """Raise FrameError unless the descriptor names a live lease holding the byte range."""
        if not 0 <= slot < self.slots:
            raise FrameError(f"arena {self.name} has no slot {slot}")
        live_token, live_generation, start, length = _ENTRY.unpack_from(
            self.memory, _TABLE_OFFSET + slot * _ENTRY.size
        )
        if live_token == 0 or live_token != token or live_generation != generation:
            raise FrameError(
                f"descriptor for arena {self.name} slot {slot} does not match a live lease "
                "(released, stale or forged)"
            )
        if nbytes < 0 or offset < start or offset + nbytes > start + length:
            raise FrameError(
                f"descriptor range [{offset}, {offset + nbytes}) lies outside its lease "
                f"[{start}, {start + length}) in arena {self.name}"
            )

    def stats(self) -> BuddyStats:
        """Occupancy of the data area (owner only)."""
        assert self._buddy is not None
        with self._lock:
            return self._buddy.stats()

    def close(self) -> None:
        """Drop this mapping; arrays still viewing it keep the memory until they go."""
        del self.data
        with contextlib.suppress(BufferError):  # views remain: unmapped when they go
            self.memory.close()


def arena_owner(name: str) -> str:
    """The process id an arena name starts with (`<proc>-<n>.arena`)."""
    return name.split("-", 1)[0]


def new_proc_id() -> str:
    """A random id for this process in the shared directory."""
    return secrets.token_hex(8)

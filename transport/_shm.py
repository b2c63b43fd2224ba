"""A process's place in a shared-memory directory: its arenas, its leases, its peers' arenas.

Ownership: a process writes only into its own arenas. Sending a tensor by reference hands
the peer a descriptor and records a *remote hold* on the lease; the peer maps the arena
read-only, validates the descriptor against the arena's lease table, and sends RELEASE
when the message and every array viewing it are gone. A lease is revoked when it has no
local hold (an `alloc()` array alive here) and no remote hold.

Crash safety: each process holds an exclusive flock on `<proc>.lock` for its lifetime;
the kernel drops it when the process dies, even on SIGKILL. A reaper thread, every
`reap_interval`, removes the files of processes whose lock is free, drops remote holds of
dead holders and holds older than `lease_timeout`, and revokes leases left with none.
A clean `close()` removes this process's files, and the domain file if it was the last.

Domain: the directory's `domain` file holds a random token; peers compare tokens in the
link handshake, then prove access with a probe (see the link).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ._arena import NAME_PATTERN, Arena, Grant, arena_owner, new_proc_id
from ._errors import FrameError
from ._header import Header, Placement
from ._kept import KeptRefs

logger = logging.getLogger(__name__)

_LOCK_SUFFIX: Final = ".lock"
_DOMAIN_FILE: Final = "domain"
_PROBE: Final = "probe"  # the holder of probe leases, until the peer answers or they expire
Ref = list[Any]  # [arena name, slot, generation, token, offset, nbytes]: a descriptor
_REF_TYPES: Final = (str, int, int, int, int, int)


@dataclass(frozen=True, slots=True)
class ShmStats:
    """What a user looks at to see that the fast path is taken, and that nothing leaks."""

    leases: int
    arena_bytes: int
    used_bytes: int
    fragmentation: float
    bytes_copied: int
    bytes_by_reference: int
    reaped_leases: int
    reaped_files: int


@dataclass(slots=True)
class _Lease:
    arena: Arena
    grant: Grant
    local: int = 0
    remote: dict[str, list[float]] = field(default_factory=dict)  # holder -> grant times


def header_refs(header: Header) -> list[Ref]:
    """The descriptors a header carries: tensors in order, then the body's, if any."""
    refs: list[Any] = [m.data for m in header.tensors if m.placement is Placement.SHM]
    if header.body_ref is not None:
        refs.append(header.body_ref)
    return refs  # each checked by ShmDomain.adopt


def check_ref(ref: object) -> Ref:
    """`ref` as a descriptor; raises FrameError if it is not one."""
    if (
        type(ref) is not list
        or len(ref) != 6
        or not all(type(v) is t for v, t in zip(ref, _REF_TYPES, strict=True))
    ):
        raise FrameError(
            "shared-memory descriptor must be [arena, slot, generation, token, offset, nbytes], "
            f"got {ref!r:.120}"
        )
    return ref


@dataclass(slots=True)
class LinkCounters:
    """Bytes one link moved through shared memory: copied in, passed by reference, received."""

    copied: int = 0
    by_reference: int = 0
    received: int = 0


@dataclass(frozen=True, slots=True)
class ShmPlacer:
    """Places tensors (or a whole Arrow IPC body) in shared memory for one peer."""

    domain: ShmDomain
    peer: str
    counters: LinkCounters = field(default_factory=LinkCounters)
    arrow_body: bool = False
    kept: KeptRefs | None = None  # the link's holds on descriptors it passes on

    def tensor(self, array: npt.NDArray[Any]) -> Ref | None:
        """A descriptor for `array`, by reference or copied in; None if there is no room."""
        return self.domain.place(array, self.peer, self.counters, self.kept)

    def forward(self, header: Header, keeper: object) -> bool:
        """Relay `header`'s descriptors to the peer as they are (no copy); always True.

        Those belonging to neither this process nor the peer keep `keeper` (the received
        message's holder) alive until the peer releases them.
        """
        refs = header_refs(header)
        passed_on = [
            r for r in refs if not self.domain.owns(r[0]) and arena_owner(r[0]) != self.peer
        ]
        if passed_on and self.kept is not None:
            self.kept.add(passed_on, keeper, time.monotonic())
        self.counters.by_reference += sum(r[5] for r in refs)
        return True

    def body(self, parts: Sequence[Any], nbytes: int) -> Ref | None:
        """A descriptor for `parts` copied one after another into a lease; None if full."""
        ref = self.domain.place_parts(parts, nbytes, self.peer)
        if ref is not None:
            self.counters.copied += nbytes
        return ref


class LocalView:
    """The base of an `alloc()` array: keeps a local hold on its lease."""

    __slots__ = ("__weakref__", "_domain", "_lease", "nbytes", "offset")

    def __init__(self, domain: ShmDomain, lease: _Lease, offset: int, nbytes: int) -> None:
        self._domain, self._lease, self.offset, self.nbytes = domain, lease, offset, nbytes
        lease.local += 1

    @property
    def __array_interface__(self) -> dict[str, Any]:
        address = self._lease.arena.address + self.offset
        return {"shape": (self.nbytes,), "typestr": "|u1", "data": (address, False), "version": 3}

    def __del__(self) -> None:
        self._domain._drop_local(self._lease)


class PeerRefs:
    """The descriptors of one received message; released together when nothing uses them."""

    __slots__ = ("__weakref__", "_domain", "_local", "_peer", "_release", "refs")

    def __init__(
        self,
        domain: ShmDomain,
        peer: str,
        refs: list[Ref],
        release: Callable[[list[Ref]], None],
        local: list[_Lease],
    ) -> None:
        self._domain, self._peer, self.refs, self._release, self._local = (
            domain,
            peer,
            refs,
            release,
            local,
        )

    def __del__(self) -> None:
        for lease in self._local:
            self._domain._drop_local(lease)
        peer_refs = [r for r in self.refs if r[0] not in self._domain._own]
        if peer_refs:
            self._release(peer_refs)


class PeerView:
    """The base of a received by-reference array: keeps its message's descriptors held."""

    __slots__ = ("__weakref__", "address", "nbytes", "owner", "ref", "refs")

    def __init__(self, refs: PeerRefs, ref: Ref, address: int, owner: str) -> None:
        self.refs, self.ref, self.address, self.owner = refs, ref, address, owner
        self.nbytes = ref[5]

    @property
    def __array_interface__(self) -> dict[str, Any]:
        return {
            "shape": (self.nbytes,),
            "typestr": "|u1",
            "data": (self.address, True),
            "version": 3,
        }


class ShmDomain:
    """This process in a shared-memory directory; thread-safe.

    Raises OSError from the constructor if the directory cannot be used.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        arena_size: int = 256 << 20,
        max_bytes: int = 2 << 30,
        slots: int = 4096,
        lease_timeout: float = 300.0,
        reap_interval: float = 1.0,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.directory.stat().st_uid == os.geteuid():
            # Ours, maybe made by hand or as a volume's root: arenas are for this user only.
            self.directory.chmod(0o700)
        self.proc = new_proc_id()
        self._arena_size = arena_size
        self._max_bytes = max_bytes
        self._slots = slots
        self.lease_timeout = lease_timeout
        self._lock = threading.RLock()
        self._arenas: list[Arena] = []
        self._own: dict[str, Arena] = {}
        self._peers: dict[str, Arena] = {}
        self._leases: dict[tuple[str, int], _Lease] = {}
        self._copied = self._by_reference = self._reaped_leases = self._reaped_files = 0
        with self._directory_lock():
            self.token = self._domain_token()
            self._lock_fd = self._hold_own_lock()
        self._stop = threading.Event()
        try:
            with self._lock:
                self._new_arena(0)  # now, not on the event loop at the first probe
        except OSError:
            self._reaper = threading.current_thread()  # none started: close() must not join
            self.close()  # leave nothing behind: our lock file, the domain file if last
            raise
        self._reaper = threading.Thread(
            target=self._reap_every, args=(reap_interval,), name="arrowmesh-reaper", daemon=True
        )
        self._reaper.start()

    def owns(self, arena: object) -> bool:
        """True if `arena` (a name from a descriptor) is one of this process's arenas."""
        return arena in self._own

    # Leases this process owns

    def alloc(self, shape: int | Sequence[int], dtype: npt.DTypeLike) -> npt.NDArray[Any] | None:
        """A zeroed-if-new array in an arena, or None if the arenas are full."""
        dt = np.dtype(dtype)
        shape_t = (shape,) if isinstance(shape, int) else tuple(shape)
        nbytes = int(np.prod(shape_t, dtype=np.int64)) * dt.itemsize
        lease = self._grant(nbytes)
        if lease is None:
            return None
        with self._lock:
            base = LocalView(self, lease, lease.grant.offset, nbytes)
        return np.asarray(base).view(dt).reshape(shape_t)

    def place(
        self,
        array: npt.NDArray[Any],
        peer: str,
        counters: LinkCounters | None = None,
        kept: KeptRefs | None = None,
    ) -> Ref | None:
        """A descriptor for `array` readable by `peer`: by reference if it already lives in
        shared memory, else copied into a new lease. None if there is no room."""
        counters = counters or LinkCounters()
        base = array.base
        while isinstance(base, np.ndarray):  # a dtype view keeps its uint8 array as base
            base = base.base
        contiguous = array.flags.c_contiguous or array.flags.f_contiguous
        if contiguous and isinstance(base, LocalView) and base._domain is self:
            counters.by_reference += array.nbytes
            return self._hold_for(base._lease, array, peer)
        if contiguous and isinstance(base, PeerView) and (base.owner == peer or kept is not None):
            counters.by_reference += array.nbytes
            self._by_reference += array.nbytes
            offset = base.ref[4] + (array.__array_interface__["data"][0] - base.address)
            ref = [*base.ref[:4], offset, array.nbytes]
            if base.owner != peer and arena_owner(ref[0]) != peer:
                # Passed on to a third process: hold it until that one releases it.
                assert kept is not None
                kept.add([ref], base.refs, time.monotonic())  # expired holds drop here
            return ref
        lease = self._grant(array.nbytes)
        if lease is None:
            return None
        counters.copied += array.nbytes
        dest = lease.arena.data[lease.grant.offset : lease.grant.offset + array.nbytes]
        if array.size:  # memory order: a Fortran-order array is sent as Fortran order
            dest[:] = array.reshape(-1, order="A").view(np.uint8)
        with self._lock:
            self._copied += array.nbytes
            lease.remote.setdefault(peer, []).append(time.monotonic())
        g = lease.grant
        return [lease.arena.name, g.slot, g.generation, g.token, g.offset, array.nbytes]

    def place_parts(self, parts: Sequence[Any], nbytes: int, peer: str) -> Ref | None:
        """Copy `parts` (an Arrow IPC stream, say) into one new lease; None if full."""
        lease = self._grant(nbytes)
        if lease is None:
            return None
        at = lease.grant.offset
        for part in parts:
            view = np.frombuffer(part, dtype=np.uint8)
            lease.arena.data[at : at + view.size] = view
            at += view.size
        with self._lock:
            self._copied += nbytes
            lease.remote.setdefault(peer, []).append(time.monotonic())
        g = lease.grant
        return [lease.arena.name, g.slot, g.generation, g.token, g.offset, nbytes]

    def unplace(self, refs: Sequence[Ref], peer: str) -> None:
        """Take back descriptors that were never sent (the send failed before the header)."""
        self.release(peer, [r for r in refs if r[0] in self._own])

    def hold(self, refs: Sequence[Ref], holder: str) -> bool:
        """Hold descriptors of ours for `holder` (a peer, or `proc` for this process's own
        hold), as `place` does: to send them again without a copy. Undo with `release`.
        False, and nothing held, if one is not a live lease of ours."""
        now = time.monotonic()
        with self._lock:
            leases = [self._leases.get((r[0], r[1])) if r[0] in self._own else None for r in refs]
            for lease, ref in zip(leases, refs, strict=True):
                if lease is None or (lease.grant.generation, lease.grant.token) != (ref[2], ref[3]):
                    return False
            for lease in leases:
                assert lease is not None
                lease.remote.setdefault(holder, []).append(now)
        return True

    def release(self, peer: str, refs: Sequence[object]) -> None:
        """`peer` is done with these descriptors of ours; bad entries are ignored."""
        with self._lock:
            for raw in refs:
                try:
                    name, slot, generation, token = check_ref(raw)[:4]
                except FrameError:
                    continue
                lease = self._leases.get((name, slot))
                if (
                    lease is None
                    or lease.grant.generation != generation
                    or lease.grant.token != token
                ):
                    continue
                held = lease.remote.get(peer)
                if held:
                    held.pop()
                    if not held:
                        del lease.remote[peer]
                self._maybe_revoke(lease)

    # Descriptors from peers

    def adopt(
        self, refs: list[Ref], peer: str, release: Callable[[list[Ref]], None]
    ) -> tuple[PeerRefs, list[npt.NDArray[np.uint8]]]:
        """Validate a message's descriptors; returns their holder and a uint8 view of each.

        Raises FrameError (nothing held, nothing read) if any descriptor is bad.
        """
        views: list[tuple[Arena, Ref]] = []
        local: list[_Lease] = []
        for ref in refs:
            check_ref(ref)
            arena = self._arena_for(ref[0], peer)
            arena.check(ref[1], ref[2], ref[3], ref[4], ref[5])
            views.append((arena, ref))
        with self._lock:
            for arena, ref in views:
                if arena.owned:
                    lease = self._leases.get((arena.name, ref[1]))
                    if lease is None:  # revoked between the check and here
                        for held in local:
                            held.local -= 1
                            self._maybe_revoke(held)
                        raise FrameError(f"lease {ref[1]} of arena {arena.name} has ended")
                    lease.local += 1
                    local.append(lease)
        holder = PeerRefs(self, peer, refs, release, local)
        arrays = [
            np.asarray(PeerView(holder, ref, arena.address + ref[4], peer)) for arena, ref in views
        ]
        self._by_reference += sum(ref[5] for ref in refs)
        return holder, arrays

    def probe(self) -> tuple[Ref, bytes]:
        """A lease holding a random nonce, for a peer to read back; revoke it with `release`."""
        nonce = secrets.token_bytes(16)
        lease = self._grant(len(nonce))
        if lease is None:
            raise FrameError("no room in the arenas for a probe")
        g = lease.grant
        lease.arena.data[g.offset : g.offset + len(nonce)] = np.frombuffer(nonce, dtype=np.uint8)
        with self._lock:
            lease.remote.setdefault(_PROBE, []).append(time.monotonic())
        return [lease.arena.name, g.slot, g.generation, g.token, g.offset, len(nonce)], nonce

    def read_probe(self, ref: object, peer: str) -> bytes:
        """The nonce a peer's probe descriptor points at; raises FrameError if unreadable."""
        checked = check_ref(ref)
        arena = self._arena_for(checked[0], peer)
        arena.check(*checked[1:])
        return arena.data[checked[4] : checked[4] + checked[5]].tobytes()

    # Housekeeping

    def stats(self) -> ShmStats:
        """Counters and occupancy now."""
        with self._lock:
            own = [a.stats() for a in self._arenas]
            size = sum(s.size for s in own)
            used = sum(s.used for s in own)
            frag = max((s.fragmentation for s in own), default=0.0)
            return ShmStats(
                len(self._leases),
                size,
                used,
                frag,
                self._copied,
                self._by_reference,
                self._reaped_leases,
                self._reaped_files,
            )

    def reap(self) -> int:
        """One reaper pass; returns how many leases and files it reclaimed."""
        dead = self._reap_dead_processes()
        alive = {p.name[: -len(_LOCK_SUFFIX)] for p in self.directory.glob(f"*{_LOCK_SUFFIX}")}
        with self._lock:
            holders = {h for lease in self._leases.values() for h in lease.remote}
        dead |= {h for h in holders if h != _PROBE and h not in alive}  # reaped by another
        with self._lock:
            # Mappings of arenas whose owner is gone (closed, or reaped by another process
            # first): each holds a descriptor and address space until dropped.
            for name in [n for n in self._peers if arena_owner(n) not in alive]:
                self._peers.pop(name).close()
        now = time.monotonic()
        reclaimed = 0
        with self._lock:
            for lease in list(self._leases.values()):
                for holder, times in list(lease.remote.items()):
                    alive_holds = [t for t in times if now - t < self.lease_timeout]
                    kept = [] if holder in dead else alive_holds
                    if len(kept) == len(times):
                        continue
                    reclaimed += len(times) - len(kept)
                    if kept:
                        lease.remote[holder] = kept
                    else:
                        del lease.remote[holder]
                    self._maybe_revoke(lease)
            self._reaped_leases += reclaimed
        return reclaimed

    def close(self) -> None:
        """Stop the reaper, revoke every lease, remove this process's files."""
        self._stop.set()
        if self._reaper is not threading.current_thread():
            self._reaper.join(10)
        with self._lock, self._directory_lock():
            self._leases.clear()
            for arena in self._arenas:
                with contextlib.suppress(FileNotFoundError):
                    arena.path.unlink()
            self._arenas.clear()
            self._own.clear()
            with contextlib.suppress(FileNotFoundError):
                (self.directory / f"{self.proc}{_LOCK_SUFFIX}").unlink()
            os.close(self._lock_fd)
            if not any(self.directory.glob(f"*{_LOCK_SUFFIX}")):
                with contextlib.suppress(FileNotFoundError):
                    (self.directory / _DOMAIN_FILE).unlink()

    # internals

    def _grant(self, nbytes: int) -> _Lease | None:
        with self._lock:
            for arena in self._arenas:
                grant = arena.grant(nbytes)
                if grant is not None:
                    return self._record(arena, grant)
            fresh = self._new_arena(nbytes)
            if fresh is None:
                return None
            grant = fresh.grant(nbytes)
            return None if grant is None else self._record(fresh, grant)

    def _record(self, arena: Arena, grant: Grant) -> _Lease:
        lease = _Lease(arena, grant)
        self._leases[(arena.name, grant.slot)] = lease
        return lease

    def _new_arena(self, nbytes: int) -> Arena | None:
        size = max(self._arena_size, 1 << (max(nbytes, 1) - 1).bit_length())
        if sum(a.data_size for a in self._arenas) + size > self._max_bytes:
            return None
        try:
            arena = Arena.create(self.directory, self.proc, len(self._arenas), size, self._slots)
        except OSError as exc:
            if not self._arenas:
                raise  # the first arena: this directory cannot hold one, no domain here
            # The directory is full (a tmpfs volume smaller than its users): no more
            # arenas, the link takes the tensor instead.
            logger.warning("cannot grow shared memory", extra={"bytes": size, "error": str(exc)})
            return None
        self._arenas.append(arena)
        self._own[arena.name] = arena
        logger.info("arena created", extra={"arena": arena.name, "bytes": size})
        return arena

    def _hold_for(self, lease: _Lease, array: npt.NDArray[Any], peer: str) -> Ref:
        g = lease.grant
        offset = array.__array_interface__["data"][0] - lease.arena.address
        with self._lock:
            lease.remote.setdefault(peer, []).append(time.monotonic())
            self._by_reference += array.nbytes
        return [lease.arena.name, g.slot, g.generation, g.token, offset, array.nbytes]

    def _drop_local(self, lease: _Lease) -> None:
        with self._lock:
            lease.local -= 1
            self._maybe_revoke(lease)

    def _maybe_revoke(self, lease: _Lease) -> None:
        if lease.local or lease.remote:
            return
        key = (lease.arena.name, lease.grant.slot)
        if self._leases.get(key) is lease:
            del self._leases[key]
            if lease.arena.name in self._own:
                lease.arena.revoke(lease.grant)

    def _arena_for(self, name: str, peer: str) -> Arena:
        arena = self._own.get(name) or self._peers.get(name)
        if arena is not None:
            return arena
        # Any process of the domain, not only the peer: a sidecar passes on its caller's
        # descriptors. The arena is found by its generated name, never by a path from the
        # peer, and each descriptor must still match a live lease's token and generation.
        if not NAME_PATTERN.match(name):
            raise FrameError(f"arena {name[:80]!r} does not belong to this shared-memory domain")
        try:
            with self._lock:
                mapped = self._peers.get(name) or Arena.open_peer(self.directory, name)
                self._peers[name] = mapped
        except FrameError as exc:
            raise FrameError(
                f"arena {name} does not belong to a process of this domain: {exc}"
            ) from None
        return mapped

    def _domain_token(self) -> str:
        path = self.directory / _DOMAIN_FILE
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            token = secrets.token_hex(16)
            tmp = self.directory / f".{_DOMAIN_FILE}.{self.proc}"
            # Created 0600: the token is never readable by another user, even for a moment.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(token)
            os.replace(tmp, path)
            return token

    def _hold_own_lock(self) -> int:
        tmp = self.directory / f".{self.proc}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(tmp, self.directory / f"{self.proc}{_LOCK_SUFFIX}")  # locked before visible
        return fd

    @contextlib.contextmanager
    def _directory_lock(self) -> Any:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _reap_dead_processes(self) -> set[str]:
        dead: set[str] = set()
        for lock in self.directory.glob(f"*{_LOCK_SUFFIX}"):
            proc = lock.name[: -len(_LOCK_SUFFIX)]
            if proc == self.proc:
                continue
            try:
                fd = os.open(lock, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # alive
            finally:
                os.close(fd)
            dead.add(proc)
            self._remove_files_of(proc, lock)
        return dead

    def _remove_files_of(self, proc: str, lock: Path) -> None:
        for arena in self.directory.glob(f"{proc}-*.arena"):
            with contextlib.suppress(FileNotFoundError):
                arena.unlink()
                self._reaped_files += 1
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
            self._reaped_files += 1
        with self._lock:
            for name in [n for n in self._peers if n.startswith(f"{proc}-")]:
                self._peers.pop(name).close()
        logger.info("reaped a dead process's files", extra={"proc": proc})

    def _reap_every(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.reap()
            except Exception:  # the reaper must outlive a bad pass
                logger.exception("reaper pass failed")

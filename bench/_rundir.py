"""The run's directory: on /dev/shm, with the shared-memory directory inside it.

Server sockets, ready files and logs go in the directory; arrowmesh's arenas go in its
`shm` subdirectory, which server and clients are both given, so no run meets another's
(or a user's) arenas in the default /dev/shm/arrowmesh. Every process leaves the
directory when it closes; after the servers stopped, whatever is left in `shm` is a
leak worth reporting, then everything is removed, on Ctrl-C too.

Memory in /dev/shm outlives a killed process, so the run holds an flock on `run.lock`
(the kernel drops it however the process ends), and each run first removes the
directories of earlier runs whose lock is free.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

logger = logging.getLogger(__name__)

_SHM_ROOT: Final = Path("/dev/shm")
_PREFIX: Final = "arrowmesh-bench-"
_LOCK: Final = "run.lock"
_ARENA_SIZE: Final = "ARROWMESH_SHM_ARENA_SIZE"
_MAX_BYTES: Final = "ARROWMESH_SHM_MAX_BYTES"
_MIN_ARENA: Final = 64 << 20  # arrowmesh's default arena size
_LEASES_PER_ARENA: Final = 4  # an input, a reply and its predecessor, one spare


@dataclass(slots=True)
class RunDir:
    """Where this run keeps its files; `leftovers` is filled in once the run ends."""

    path: Path
    shm_dir: Path
    leftovers: list[str] = field(default_factory=list)


@contextlib.contextmanager
def run_directory() -> Iterator[RunDir]:
    """A fresh directory (on /dev/shm where there is one), removed with everything in it.

    Files still in its `shm` subdirectory at the end are listed in `leftovers` first.
    """
    root = _SHM_ROOT if _SHM_ROOT.is_dir() else Path(tempfile.gettempdir())
    _remove_abandoned(root)
    path = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=root))
    run = RunDir(path, path / "shm")
    lock = -1
    try:
        lock = _hold_lock(path)
        run.shm_dir.mkdir(mode=0o700)
        yield run
    finally:
        run.leftovers[:] = sorted(_relative(run.shm_dir))
        shutil.rmtree(path, ignore_errors=True)
        if lock >= 0:
            os.close(lock)


def _hold_lock(path: Path) -> int:
    """Lock `run.lock` in `path`; it appears already locked, so no other run takes it."""
    tmp = path / f".{_LOCK}"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.replace(tmp, path / _LOCK)
    return fd


def _remove_abandoned(root: Path) -> None:
    """Remove run directories whose run is over: nobody holds their lock."""
    for path in root.glob(f"{_PREFIX}*"):
        try:
            fd = os.open(path / _LOCK, os.O_RDWR)
        except OSError:
            continue  # not ours, or still being set up
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a run in progress
        finally:
            os.close(fd)
        logger.warning("removing an abandoned run directory", extra={"path": str(path)})
        shutil.rmtree(path, ignore_errors=True)


def _relative(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return [str(p.relative_to(directory)) for p in directory.rglob("*")]


def arena_size_for(largest: int) -> int:
    """An arena that holds a few leases of the largest tensor: none is made while timing."""
    wanted = _LEASES_PER_ARENA * max(largest, 1)
    return max(_MIN_ARENA, 1 << (wanted - 1).bit_length())


@contextlib.contextmanager
def arena_settings(arena_size: int) -> Iterator[None]:
    """Arena settings for this process (its clients) and the servers it starts.

    ARROWMESH_SHM_ARENA_SIZE is `arena_size`; ARROWMESH_SHM_MAX_BYTES leaves room for one
    more arena per process, so leases that do not come back show up in the path check
    (the arenas grew, then the network was used) before they fill /dev/shm. arrowmesh
    reads them when a client first makes its shared-memory domain, so they are set for
    the run and restored after it.
    """
    wanted = {_ARENA_SIZE: str(arena_size), _MAX_BYTES: str(2 * arena_size)}
    previous = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

"""Shared-memory domains in one process: two domains stand for two processes."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from transport import FrameError, ShmDomain

from ..conftest import child_env, wait_for


@pytest.fixture
def domains(shm_dir: Path) -> Iterator[tuple[ShmDomain, ShmDomain]]:
    a = ShmDomain(shm_dir, arena_size=8 << 20, reap_interval=0.05)
    b = ShmDomain(shm_dir, arena_size=8 << 20, reap_interval=0.05)
    yield a, b
    b.close()
    a.close()


def send(
    a: ShmDomain, b: ShmDomain, array: np.ndarray
) -> tuple[object, np.ndarray, list[list[object]]]:
    """`a` places `array` for `b`; `b` adopts it. Returns b's holder, view, and what b released."""
    ref = a.place(array, b.proc)
    assert ref is not None
    released: list[list[object]] = []
    holder, (view,) = b.adopt([ref], a.proc, released.extend)
    return holder, view, released


def test_a_tensor_crosses_by_reference_and_its_lease_ends_on_release(
    domains: tuple[ShmDomain, ShmDomain],
) -> None:
    a, b = domains
    x = np.arange(100_000, dtype=np.float32)
    holder, view, released = send(a, b, x)
    np.testing.assert_array_equal(view.view(np.float32), x)
    assert not view.flags.writeable
    assert a.stats().leases == 1 and a.stats().bytes_copied == x.nbytes
    del holder, view
    gc.collect()
    assert len(released) == 1
    a.release(b.proc, released)
    assert a.stats().leases == 0
    assert a.stats().used_bytes == 0


def test_alloc_arrays_travel_without_a_copy(domains: tuple[ShmDomain, ShmDomain]) -> None:
    a, b = domains
    x = a.alloc((64, 64), np.int16)
    assert x is not None
    x[:] = 7
    holder, view, _ = send(a, b, x)
    assert a.stats().bytes_copied == 0
    assert (view.view(np.int16) == 7).all()
    del holder, view, x
    gc.collect()


def test_a_peer_view_passed_back_to_its_owner_needs_no_copy(
    domains: tuple[ShmDomain, ShmDomain],
) -> None:
    a, b = domains
    x = np.ones(50_000)
    holder, view, released = send(a, b, x)
    back = b.place(view.view(np.float64), a.proc)  # b echoes what it got
    assert back is not None and b.stats().bytes_copied == 0
    holder_a, (mine,) = a.adopt([back], b.proc, lambda refs: None)
    assert (mine.view(np.float64) == 1).all()
    del holder, view
    gc.collect()
    a.release(b.proc, released)
    assert a.stats().leases == 1  # still held by `mine`
    del holder_a, mine
    gc.collect()
    assert a.stats().leases == 0


@pytest.mark.parametrize(
    ("forge", "says"),
    [
        (lambda r: [r[0], r[1], r[2], r[3] ^ 1, r[4], r[5]], "does not match a live lease"),
        (lambda r: [r[0], r[1], r[2] + 1, r[3], r[4], r[5]], "does not match a live lease"),
        (lambda r: [r[0], r[1], r[2], r[3], r[4], r[5] + (1 << 20)], "outside its lease"),
        (lambda r: [r[0], r[1], r[2], r[3], r[4] - 4096, r[5]], "outside its lease"),
        (lambda r: [r[0], 10**6, r[2], r[3], r[4], r[5]], "no slot"),
        (lambda r: ["../../../etc/passwd", *r[1:]], "does not belong"),
        (lambda r: ["0123456789abcdef-0.arena", *r[1:]], "does not belong"),
        (lambda r: [r[0], "1", *r[2:]], "descriptor must be"),
        (lambda r: r[:5], "descriptor must be"),
    ],
)
def test_forged_descriptors_are_refused_and_read_nothing(
    domains: tuple[ShmDomain, ShmDomain], forge: object, says: str
) -> None:
    a, b = domains
    ref = a.place(np.arange(20_000, dtype=np.int64), b.proc)
    assert ref is not None
    before = b.stats()
    with pytest.raises(FrameError, match=says):
        b.adopt([forge(ref)], a.proc, lambda refs: None)  # type: ignore[operator]
    assert b.stats().bytes_by_reference == before.bytes_by_reference
    a.release(b.proc, [ref])


def test_a_stale_descriptor_is_refused_after_its_lease_ends(
    domains: tuple[ShmDomain, ShmDomain],
) -> None:
    a, b = domains
    ref = a.place(np.zeros(10_000), b.proc)
    assert ref is not None
    a.release(b.proc, [ref])
    a.place(np.ones(10_000), b.proc)  # the slot and block are reused
    with pytest.raises(FrameError, match="does not match a live lease"):
        b.adopt([ref], a.proc, lambda refs: None)


def test_a_lease_held_too_long_is_reclaimed(shm_dir: Path) -> None:
    a = ShmDomain(shm_dir, arena_size=4 << 20, lease_timeout=0.2, reap_interval=0.05)
    b = ShmDomain(shm_dir, arena_size=4 << 20)
    try:
        assert a.place(np.zeros(10_000), b.proc) is not None
        wait_for(lambda: a.stats().leases == 0, 5, "the lease timeout")
        assert a.stats().reaped_leases == 1
    finally:
        b.close()
        a.close()


def test_domains_in_different_directories_have_different_tokens(
    tmp_path: Path, shm_dir: Path
) -> None:
    a = ShmDomain(shm_dir, arena_size=1 << 20)
    b = ShmDomain(tmp_path / "other", arena_size=1 << 20)
    try:
        assert a.token != b.token
    finally:
        b.close()
        a.close()


def test_close_leaves_the_directory_empty(shm_dir: Path) -> None:
    a = ShmDomain(shm_dir, arena_size=1 << 20)
    b = ShmDomain(shm_dir, arena_size=1 << 20)
    assert a.token == b.token
    assert len(list(shm_dir.iterdir())) == 5  # domain, two locks, two arenas
    a.close()
    b.close()
    assert list(shm_dir.iterdir()) == []


CHILD = """
import sys, time
import numpy as np
from transport import ShmDomain
d = ShmDomain(sys.argv[1], arena_size=1 << 20)
peer = sys.argv[2]
x = d.alloc(1000, np.float64)
d.place(np.ones(5000), peer)
print(d.proc, flush=True)
time.sleep(60)
"""


def test_files_of_a_killed_process_are_removed_and_its_holds_dropped(shm_dir: Path) -> None:
    a = ShmDomain(shm_dir, arena_size=1 << 20, reap_interval=0.05)
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CHILD), str(shm_dir), a.proc],
            stdout=subprocess.PIPE,
            env=child_env(),
            text=True,
        )
        assert child.stdout is not None
        proc = child.stdout.readline().strip()
        ref = a.place(np.zeros(3000), proc)  # lent to the child, never released
        assert ref is not None and a.stats().leases == 1
        assert any(p.name.startswith(proc) for p in shm_dir.iterdir())
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
        wait_for(
            lambda: not any(p.name.startswith(proc) for p in shm_dir.iterdir()), 5, "files to go"
        )
        wait_for(lambda: a.stats().leases == 0, 5, "the dead holder's lease to be reclaimed")
        assert a.stats().reaped_files >= 2
    finally:
        a.close()


def test_a_relayed_descriptor_stays_held_until_the_next_peer_releases_it(shm_dir: Path) -> None:
    """a -> b -> c by reference: b keeps a's lease held until c is done with it."""
    from transport._kept import KeptRefs

    a, b, c = (ShmDomain(shm_dir, arena_size=8 << 20, reap_interval=0.05) for _ in range(3))
    try:
        x = np.arange(30_000, dtype=np.int32)
        holder_b, view_b, released_by_b = send(a, b, x)
        kept = KeptRefs(timeout=60.0)
        relayed = b.place(view_b.view(np.int32), c.proc, kept=kept)
        assert relayed is not None and b.stats().bytes_copied == 0
        assert relayed[0].startswith(a.proc) and len(kept) == 1
        holder_c, (view_c,) = c.adopt([relayed], b.proc, lambda refs: None)
        np.testing.assert_array_equal(view_c.view(np.int32), x)
        del holder_b, view_b
        gc.collect()
        assert released_by_b == []  # the kept hold keeps b's message alive
        del kept.release([relayed])[:]
        gc.collect()
        assert len(released_by_b) == 1
        a.release(b.proc, released_by_b)
        assert a.stats().leases == 0
        del holder_c, view_c
    finally:
        for d in (c, b, a):
            d.close()


def test_a_relay_through_a_link_that_closes_lets_go(shm_dir: Path) -> None:
    from transport._kept import KeptRefs

    a, b = ShmDomain(shm_dir, reap_interval=0.05), ShmDomain(shm_dir, reap_interval=0.05)
    try:
        holder, view, released = send(a, b, np.ones(40_000))
        kept = KeptRefs(timeout=60.0)
        assert b.place(view.view(np.float64), "0123456789abcdef", kept=kept) is not None
        del holder, view
        gc.collect()
        assert released == []
        del kept.clear()[:]
        gc.collect()
        assert len(released) == 1
        a.release(b.proc, released)
    finally:
        b.close()
        a.close()


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs (what a docker-compose tmpfs volume or a default /dev/shm can be)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], timeout=10, check=False)


def test_a_tmpfs_too_small_for_an_arena_is_an_error_and_leaves_nothing(small_tmpfs: Path) -> None:
    directory = small_tmpfs / "arrowmesh"
    with pytest.raises(OSError, match="No space left"):
        ShmDomain(directory, arena_size=8 << 20)  # more than the 6 MiB there are
    assert sorted(p.name for p in directory.iterdir()) == []


def test_a_full_tmpfs_stops_growth_and_falls_back_without_failing(small_tmpfs: Path) -> None:
    directory = small_tmpfs / "arrowmesh"
    domain = ShmDomain(directory, arena_size=4 << 20)  # room for one arena, not two
    try:
        first = domain.alloc((1 << 20,), np.uint8)
        assert first is not None
        # Needs a second arena, which the volume cannot hold: no arena, not a SIGBUS.
        assert domain.alloc((3 << 20,), np.uint8) is None
        assert len(list(directory.glob("*.arena"))) == 1
        del first
    finally:
        domain.close()
    assert sorted(p.name for p in directory.iterdir()) == []


def _open_arenas_of(proc: str) -> list[str]:
    """Arena files of `proc` this process holds open (a mapping keeps one descriptor)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if os.path.basename(target).startswith(f"{proc}-"):
            found.append(target)
    return found


def test_a_gone_peers_arena_is_unmapped_even_when_another_process_reaped_it(
    domains: tuple[ShmDomain, ShmDomain], shm_dir: Path
) -> None:
    _, b = domains
    c = ShmDomain(shm_dir, arena_size=8 << 20, reap_interval=0.05)
    holder, view, _ = send(c, b, np.arange(100_000, dtype=np.int64))  # b maps c's arena
    del holder, view
    gc.collect()
    assert _open_arenas_of(c.proc)
    gone = c.proc
    c.close()  # its files go (as when another process's reaper removes a dead one's)
    wait_for(lambda: not _open_arenas_of(gone), 5.0, "b to unmap the gone peer's arena")


def test_the_directory_and_every_file_are_for_this_user_only(tmp_path: Path) -> None:
    directory = tmp_path / "shm"
    directory.mkdir(mode=0o755)  # made by someone else's recipe: opened up
    domain = ShmDomain(directory, arena_size=4 << 20)
    try:
        assert directory.stat().st_mode & 0o777 == 0o700
        files = list(directory.iterdir())
        assert {p.suffix for p in files} >= {".arena", ".lock"} and (directory / "domain").exists()
        for path in files:
            assert path.stat().st_mode & 0o077 == 0, path.name
    finally:
        domain.close()

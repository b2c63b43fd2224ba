"""Membership: last-known-good through outages, probes, and the version counter."""

from __future__ import annotations

from discovery import Endpoint, Outage, Snapshot
from discovery._membership import Membership

A = Endpoint("svc", "a", "10.99.0.1", 7700)
B = Endpoint("svc", "b", "10.99.0.2", 7700)


def test_an_outage_keeps_the_last_good_set_and_marks_it_stale() -> None:
    m = Membership()
    assert m.apply(Snapshot((A, B)), now=1.0)
    assert m.apply(Outage("down"), now=2.0)
    assert m.endpoints == (A, B) and m.stale and m.stale_since == 2.0
    assert not m.apply(Outage("still down"), now=3.0)
    assert m.stale_since == 2.0 and m.stale_reason == "still down"
    assert m.apply(Snapshot((A, B)), now=4.0)  # same set, but no longer stale
    assert not m.stale


def test_an_outage_before_any_snapshot_is_an_empty_stale_set() -> None:
    m = Membership()
    assert m.apply(Outage("never reached"), now=0.0)
    assert m.received and m.stale and m.endpoints == ()


def test_probe_failures_drop_an_endpoint_and_a_success_brings_it_back() -> None:
    m = Membership(probe_failures=2)
    m.apply(Snapshot((A, B)), now=0.0)
    version = m.version
    assert not m.probed("a", ok=False)
    assert m.probed("a", ok=False)
    assert m.endpoints == (B,) and m.version == version + 1
    assert m.probed("a", ok=True)
    assert list(m.endpoints) == [A, B]


def test_a_reannounced_endpoint_starts_with_a_clean_probe_record() -> None:
    m = Membership(probe_failures=1)
    m.apply(Snapshot((A,)), now=0.0)
    m.probed("a", ok=False)
    moved = Endpoint("svc", "a", "10.99.0.7", 7700)
    m.apply(Snapshot((moved,)), now=1.0)
    assert m.endpoints == (moved,)


def test_probes_of_unknown_endpoints_are_ignored() -> None:
    m = Membership()
    m.apply(Snapshot((A,)), now=0.0)
    assert not m.probed("zzz", ok=False)


def test_a_snapshot_equal_to_the_current_one_moves_nothing() -> None:
    m = Membership()
    m.apply(Snapshot((A,)), now=0.0)
    version = m.version
    assert not m.apply(Snapshot((A,)), now=1.0)
    assert m.version == version

"""The pure pieces of the Consul backend: health answers, index rules, rate limit."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from discovery import Endpoint, RecordError
from discovery._consul_records import (
    TokenBucket,
    backoff,
    endpoints_from_health,
    next_index,
    parse_index,
    registration,
)


def _entry(sid: str, address: str = "", port: object = 7700, status: str = "passing") -> object:
    return {
        "Node": {"Node": "n1", "Address": "10.99.0.2"},
        "Service": {"ID": sid, "Service": "embedder", "Address": address, "Port": port,
                    "Meta": {"protocol": "mesh", "zone": "a"}, "Tags": []},
        "Checks": [
            {"CheckID": "serfHealth", "Status": "passing"},
            {"CheckID": f"service:{sid}", "Status": status},
        ],
    }  # fmt: skip


def test_empty_service_address_means_the_node_address() -> None:
    snapshot = endpoints_from_health("embedder", [_entry("e-2", "10.99.0.9"), _entry("e-1")])
    assert [(e.id, e.address, e.zone) for e in snapshot.endpoints] == [
        ("e-1", "10.99.0.2", "a"),
        ("e-2", "10.99.0.9", "a"),
    ]


def test_malformed_entries_are_skipped_and_counted() -> None:
    entries = [_entry("good"), _entry("bad", port="80"), {"Node": 1}, "junk", _entry("w", "x y")]
    snapshot = endpoints_from_health("embedder", entries)
    assert [e.id for e in snapshot.endpoints] == ["good"] and snapshot.rejected == 4


def test_an_entry_with_a_check_not_passing_is_left_out() -> None:
    snapshot = endpoints_from_health("embedder", [_entry("e-1", status="warning")])
    assert snapshot.endpoints == () and snapshot.rejected == 0


def test_an_answer_that_is_not_a_list_is_a_record_error() -> None:
    with pytest.raises(RecordError, match="not a list"):
        endpoints_from_health("embedder", {"oops": 1})


JSON = st.recursive(
    st.none() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(JSON)
def test_any_json_gives_a_snapshot_or_record_error(answer: object) -> None:
    with contextlib.suppress(RecordError):
        endpoints_from_health("embedder", answer)


def test_index_rules_reset_on_going_backwards_and_never_block_on_zero() -> None:
    assert next_index(0, 0) == 1
    assert next_index(10, 12) == 12
    assert next_index(10, 10) == 10
    assert next_index(10, 3) == 0  # one immediate read, then block again
    assert next_index(0, 3) == 3


@pytest.mark.parametrize("header", ["x", "-1", None])
def test_bad_index_headers_are_record_errors(header: object) -> None:
    with pytest.raises(RecordError):
        parse_index(header)


def test_token_bucket_allows_a_burst_then_paces() -> None:
    bucket = TokenBucket(burst=2, rate=1.0)
    assert [bucket.delay(0.0) for _ in range(2)] == [0.0, 0.0]
    assert bucket.delay(0.0) == pytest.approx(1.0)
    assert bucket.delay(10.0) == 0.0


def test_backoff_is_bounded_jitter() -> None:
    assert backoff(0, 0.5) == pytest.approx(0.1)
    assert backoff(100, 0.999) < 5.0
    assert backoff(3, 0.0) == 0.0


def test_registration_carries_meta_weights_and_a_critical_ttl_check() -> None:
    endpoint = Endpoint("embedder", "e-1", "10.99.0.5", 7700, shm_domain="d", weight=2)
    body = registration(endpoint, ttl=10.0, deregister_after=60.0)
    assert body["service_id"] == "e-1" and body["meta"] == {
        "protocol": "mesh", "shm_domain": "d", "weight": "2"
    }  # fmt: skip
    assert body["weights"] == {"Passing": 2, "Warning": 1}
    assert body["check"] == {
        "TTL": "10000ms", "DeregisterCriticalServiceAfter": "60000ms", "Notes": "arrowmesh sidecar"
    }  # fmt: skip


def test_registration_refuses_a_wildcard_address() -> None:
    with pytest.raises(RecordError, match="wildcard"):
        registration(Endpoint("s", "s-1", "0.0.0.0", 1), 10.0, 60.0)

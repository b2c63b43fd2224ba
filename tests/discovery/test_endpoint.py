"""Endpoint: validation, and the one translation to and from registry metadata."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from discovery import Endpoint, RecordError, check_address


def test_meta_round_trip_keeps_every_field() -> None:
    endpoint = Endpoint(
        "embedder",
        "embedder-1",
        "10.99.0.5",
        7700,
        "oip-grpc",
        "dom-1",
        "zone-a",
        3,
        8,
        (("gpu", "none"), ("model", "e5")),
    )
    meta = endpoint.to_meta()
    assert meta["protocol"] == "oip-grpc" and meta["weight"] == "3" and meta["gpu"] == "none"
    back = Endpoint.from_record("embedder", "embedder-1", "10.99.0.5", 7700, meta)
    assert back == endpoint and hash(back) == hash(endpoint)


def test_defaults_are_left_out_of_meta() -> None:
    assert Endpoint("s", "s-1", "127.0.0.1", 1).to_meta() == {"protocol": "mesh"}


@pytest.mark.parametrize(
    ("meta", "says"),
    [
        ({"protocol": "smtp"}, "protocol 'smtp'"),
        ({"weight": "heavy"}, "weight='heavy' is not an integer"),
        ({"weight": "0"}, "weight 0"),
        ({"capacity": "-1"}, "capacity -1"),
        ({"consul-x": "1"}, "meta key 'consul-x'"),
        ({"bad key": "1"}, "meta key 'bad key'"),
        ({"k": "v" * 513}, "over 512"),
    ],
)
def test_bad_meta_raises_record_error_naming_it(meta: dict[str, str], says: str) -> None:
    with pytest.raises(RecordError, match=says.replace("(", r"\(")):
        Endpoint.from_record("svc", "svc-1", "127.0.0.1", 80, meta)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"port": 0}, "port 0"),
        ({"port": 70000}, "port 70000"),
        ({"id": "../etc"}, "is not a name"),
        ({"service": ""}, "is not a name"),
        ({"address": ""}, "no address"),
    ],
)
def test_bad_fields_raise_record_error(kwargs: dict[str, object], says: str) -> None:
    fields: dict[str, object] = {"service": "svc", "id": "svc-1", "address": "h", "port": 1}
    with pytest.raises(RecordError, match=says):
        Endpoint(**(fields | kwargs))  # type: ignore[arg-type]  # deliberately unchecked input


def test_authority_brackets_ipv6() -> None:
    assert Endpoint("s", "s-1", "::1", 7700).authority == "[::1]:7700"
    assert Endpoint("s", "s-1", "10.0.0.1", 7700).authority == "10.0.0.1:7700"


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "bad host", "-x"])
def test_wildcards_and_junk_are_not_addresses(address: str) -> None:
    with pytest.raises(RecordError):
        check_address(address)


@given(st.dictionaries(st.text(max_size=20), st.text(max_size=600), max_size=6))
def test_any_meta_map_gives_an_endpoint_or_record_error(meta: dict[str, str]) -> None:
    try:
        endpoint = Endpoint.from_record("svc", "svc-1", "127.0.0.1", 80, meta)
    except RecordError:
        return
    assert Endpoint.from_record("svc", "svc-1", "127.0.0.1", 80, endpoint.to_meta()) == endpoint

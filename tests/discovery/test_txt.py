"""mDNS TXT records <-> Endpoint: every field round-trips; garbage is only ever a RecordError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discovery import META_KEYS, PROTOCOLS, Endpoint, RecordError
from discovery._endpoint import MAX_WEIGHT
from discovery._txt import (
    MAX_TXT_SIZE,
    MAX_TXT_STRING,
    RESERVED_KEYS,
    SERVICE_TYPE,
    decode_txt,
    encode_txt,
    endpoint_from_txt,
    instance_id,
    instance_name,
    service_of_txt,
)


def txt(*strings: bytes) -> bytes:
    """A TXT record made of `strings`, each with its length byte."""
    return b"".join(bytes([len(s)]) + s for s in strings)


def round_trip(endpoint: Endpoint) -> Endpoint:
    text = encode_txt(endpoint)
    return endpoint_from_txt(instance_name(endpoint.id), endpoint.address, endpoint.port, text)


FULL = Endpoint(
    service="embedder",
    id="embedder-7.a",
    address="10.99.3.4",
    port=7700,
    protocol="oip-grpc",
    shm_domain="d6f1c0de",
    zone="rack-2",
    weight=40,
    capacity=16,
    extra=(("empty", ""), ("eq", "a=b=c"), ("gpu", "a100"), ("model_rev", "3")),
)


def test_every_endpoint_field_round_trips_through_txt() -> None:
    assert round_trip(FULL) == FULL
    assert round_trip(Endpoint("s", "i", "127.0.0.1", 1)) == Endpoint("s", "i", "127.0.0.1", 1)


def test_txt_record_carries_version_service_epoch_and_meta_as_key_value_strings() -> None:
    meta = {"txtvers": "1", "service": "embedder", "epoch": "0a1b2c3d", **FULL.to_meta()}
    assert decode_txt(encode_txt(FULL, "0a1b2c3d")) == meta


def test_advertisements_in_different_epochs_differ_but_decode_the_same() -> None:
    first, second = encode_txt(FULL, "00000001"), encode_txt(FULL, "00000002")
    assert first != second
    name = instance_name(FULL.id)
    assert endpoint_from_txt(name, FULL.address, FULL.port, first) == FULL
    assert endpoint_from_txt(name, FULL.address, FULL.port, second) == FULL


def test_instance_names_map_to_endpoint_ids_and_back() -> None:
    assert instance_name("embedder-7.a") == f"embedder-7.a.{SERVICE_TYPE}"
    assert instance_id(instance_name("embedder-7.a")) == "embedder-7.a"
    assert instance_id("E-1._ARROWMESH._tcp.local.") == "E-1"  # DNS names ignore case
    with pytest.raises(RecordError, match="not of type"):
        instance_id("e-1._http._tcp.local.")
    with pytest.raises(RecordError, match="not of type"):
        instance_id(SERVICE_TYPE)


@pytest.mark.parametrize("key", [*RESERVED_KEYS, "Service", "TXTVERS"])
def test_reserved_keys_cannot_be_advertised(key: str) -> None:
    endpoint = Endpoint("s", "i", "127.0.0.1", 1, extra=((key, "x"),))
    with pytest.raises(RecordError, match="reserved"):
        encode_txt(endpoint)


def test_keys_differing_only_in_case_cannot_be_advertised() -> None:
    endpoint = Endpoint("s", "i", "127.0.0.1", 1, extra=(("Gpu", "x"), ("gpu", "y")))
    with pytest.raises(RecordError, match="case"):
        encode_txt(endpoint)


def test_a_value_over_one_txt_string_cannot_be_advertised() -> None:
    endpoint = Endpoint("s", "i", "127.0.0.1", 1, extra=(("k", "v" * 254),))
    with pytest.raises(RecordError, match="255"):
        encode_txt(endpoint)


def test_a_record_over_the_size_limit_cannot_be_advertised() -> None:
    extra = tuple((f"k{n}", "v" * 200) for n in range(7))
    with pytest.raises(RecordError, match=str(MAX_TXT_SIZE)):
        encode_txt(Endpoint("s", "i", "127.0.0.1", 1, extra=extra))


GOOD = (b"txtvers=1", b"service=embedder")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (txt(*GOOD) + b"\x09proto", "truncated"),
        (txt(*GOOD, b"protocol"), "no '='"),
        (txt(*GOOD, b"=mesh"), "printable"),
        (txt(*GOOD, b"k\x07y=1"), "printable"),
        (txt(*GOOD, b"caf\xc3\xa9=1"), "printable"),
        (txt(*GOOD, b"zone=\xff"), "UTF-8"),
        (txt(*GOOD, b"zone=a", b"Zone=b"), "twice"),
        (txt(b"service=embedder"), "txtvers"),
        (txt(b"txtvers=2", b"service=embedder"), "txtvers"),
        (txt(b"txtvers=1"), "no service"),
        (txt(b"txtvers=1", b"service="), "not a name"),
        (txt(*GOOD, b"weight=heavy"), "not an integer"),
        (txt(*GOOD, b"weight=0"), "weight"),
        (txt(*GOOD, b"protocol=smtp"), "protocol"),
        (txt(*GOOD, b"bad.key=1"), "meta key"),
        (txt(*GOOD) + txt(b"k=" + b"v" * 250) * 6, "over"),
    ],
)
def test_malformed_txt_records_raise_record_error_saying_what(text: bytes, match: str) -> None:
    with pytest.raises(RecordError, match=match):
        endpoint_from_txt(instance_name("e-1"), "10.99.0.1", 7700, text)


def test_an_empty_string_in_a_record_is_nothing() -> None:
    assert decode_txt(b"\x00") == {}
    assert decode_txt(txt(b"", b"a=1", b"")) == {"a": "1"}


def test_a_bad_instance_name_is_a_record_error() -> None:
    with pytest.raises(RecordError, match="not a name"):
        endpoint_from_txt(instance_name("-e"), "10.99.0.1", 7700, txt(*GOOD))


def test_the_service_of_a_malformed_record_is_read_as_far_as_it_goes() -> None:
    assert service_of_txt(txt(b"txtvers=1", b"service=embedder", b"weight=x")) == "embedder"
    assert service_of_txt(txt(b"service=embedder") + b"\xff\x01") == "embedder"
    assert service_of_txt(txt(b"txtvers=1") + b"\x30service=embedder") == "embedder"
    assert service_of_txt(txt(b"txtvers=1")) is None
    assert service_of_txt(txt(b"service=\xff")) is None


NAMES = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
KEYS = st.one_of(
    st.from_regex(r"\A[A-Za-z0-9_-]{1,24}\Z").filter(
        lambda k: k not in META_KEYS and not k.startswith("consul-")
    ),
    st.sampled_from(["gpu", "GPU", "Gpu", "Service", "txtVers", "Epoch"]),  # clash ignoring case
)
VALUES = st.text(max_size=60)
LONG_VALUES = st.one_of(VALUES, st.text(min_size=200, max_size=300))
ENDPOINTS = st.builds(
    Endpoint,
    service=NAMES,
    id=NAMES,
    address=st.ip_addresses(v=4).map(str),
    port=st.integers(1, 65535),
    protocol=st.sampled_from(sorted(PROTOCOLS)),
    shm_domain=VALUES,
    zone=LONG_VALUES,
    weight=st.integers(1, MAX_WEIGHT),
    capacity=st.integers(0, 2**40),
    extra=st.dictionaries(KEYS, LONG_VALUES, max_size=8).map(lambda d: tuple(sorted(d.items()))),
)


def fits_in_txt(endpoint: Endpoint) -> bool:
    """What the codec promises to carry, computed independently of it."""
    meta = {"txtvers": "1", "service": endpoint.service, "epoch": "e" * 8, **endpoint.to_meta()}
    folded = [key.lower() for key in meta]
    strings = [f"{k}={v}".encode() for k, v in meta.items()]
    return (
        len(set(folded)) == len(folded)
        and all(len(s) <= MAX_TXT_STRING for s in strings)
        and sum(1 + len(s) for s in strings) <= MAX_TXT_SIZE
    )


@settings(max_examples=300)
@given(ENDPOINTS)
def test_any_endpoint_that_fits_round_trips_and_any_other_is_a_record_error(
    endpoint: Endpoint,
) -> None:
    if fits_in_txt(endpoint):
        assert round_trip(endpoint) == endpoint
    else:
        with pytest.raises(RecordError):
            encode_txt(endpoint)


@settings(max_examples=500)
@given(st.binary(max_size=1400))
def test_garbage_txt_bytes_raise_only_record_error(text: bytes) -> None:
    service_of_txt(text)
    with contextlib.suppress(RecordError):
        endpoint_from_txt(instance_name("e-1"), "10.99.0.1", 7700, text)


TXT_STRINGS = st.one_of(
    st.binary(max_size=40),
    st.builds(
        lambda k, v: k + b"=" + v,
        st.sampled_from([*map(str.encode, META_KEYS)]),
        st.binary(max_size=12),
    ),
    st.builds(
        lambda k, v: k.encode() + b"=" + v.encode("utf-8", "surrogatepass"),
        st.sampled_from(["txtvers", "service", "weight", "capacity", "protocol", "x"]),
        st.text(max_size=12),
    ),
)


@settings(max_examples=500)
@given(st.lists(TXT_STRINGS, max_size=12), NAMES)
def test_garbage_txt_properties_raise_only_record_error(strings: list[bytes], name: str) -> None:
    text = txt(*(s[:255] for s in strings))
    try:
        endpoint = endpoint_from_txt(instance_name(name), "10.99.0.1", 7700, text)
    except RecordError:
        return
    assert (
        endpoint_from_txt(instance_name(name), "10.99.0.1", 7700, encode_txt(endpoint)) == endpoint
    )

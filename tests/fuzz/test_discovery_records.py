"""Registry records from the network: Consul health answers and index headers, mDNS TXT
records, and `--discovery` URIs. Each raises only its documented error, and what it accepts
is a valid endpoint of the service asked for.

tests/discovery already throws random JSON at the health decoder and random bytes at the
TXT decoder; here the inputs are near-valid (a real answer or record with fields swapped
for edge values and wrong types), and the accepted results are checked, not just survived.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from discovery import (
    META_KEYS,
    ConsulUri,
    Endpoint,
    InvalidDiscoveryUri,
    MdnsUri,
    RecordError,
    StaticUri,
    parse_discovery_uri,
)
from discovery._consul_records import endpoints_from_health, next_index, parse_index
from discovery._txt import (
    SERVICE_TYPE,
    encode_txt,
    endpoint_from_txt,
    instance_id,
    instance_name,
    service_of_txt,
)

from . import _budget
from ._budget import event
from ._strategies import edge_ints, rarely

pytestmark = pytest.mark.timeout(_budget.timeout())

SERVICE = "embedder"

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
names = rarely(
    st.sampled_from(["e-1", "e-2", "E.3", "e_4", "x" * 63]),
    st.sampled_from(["-bad", "", "x" * 64, "a b", "é", "e\n"]) | st.text(max_size=8),
    5,
)
addresses = rarely(
    st.sampled_from(["10.99.0.5", "::1", "host-a", "fe80::2"]),
    st.sampled_from(["", "0.0.0.0", "::", "host_a", "a..b", "256.1.1.1", "fe80::1%eth0",
                     "x" * 260, "10.0.0.1 ", "[::1]"]) | st.text(max_size=12),
    5,
)  # fmt: skip
meta_values = rarely(
    st.sampled_from(["", "1", "0", "7", "mesh", "http", "oip-grpc", "a100"]),
    st.sampled_from(["-1", "1000001", "grpc", " 7 ", "1e3", "٣", "x" * 513]) | st.text(max_size=8),
    3,
)
metas = st.dictionaries(
    rarely(
        st.sampled_from([*META_KEYS, "gpu", "model_rev"]),
        st.sampled_from(["consul-x", "bad key", "", "k" * 129]) | st.text(max_size=6),
        4,
    ),
    rarely(meta_values, json_values, 12),
    max_size=4,
)


def _check_endpoint(endpoint: Endpoint, service: str) -> None:
    """An accepted endpoint is a valid one of the service asked for (its checks ran)."""
    assert endpoint.service == service
    assert (
        Endpoint.from_record(
            service, endpoint.id, endpoint.address, endpoint.port, endpoint.to_meta()
        )
        == endpoint
    )


@st.composite
def health_entries(draw: st.DrawFn) -> object:
    """One entry of `/v1/health/service/<s>?passing`, with any field possibly wrong."""
    service = {
        "ID": draw(rarely(names, json_values, 8)),
        "Service": draw(
            rarely(st.just(SERVICE), st.sampled_from(["other", SERVICE.upper(), ""]), 8)
        ),
        "Address": draw(rarely(addresses, json_values, 8)),
        "Port": draw(rarely(st.integers(1, 65535), edge_ints | json_values, 6)),
        "Meta": draw(rarely(metas, json_values, 8)),
        "Tags": ["arrowmesh"],
    }
    checks = draw(
        st.lists(
            rarely(
                st.fixed_dictionaries(
                    {
                        "Status": rarely(
                            st.just("passing"), st.sampled_from(["warning", "critical"]), 6
                        )
                    }
                ),
                json_values,
                10,
            ),
            max_size=3,
        )
    )
    entry: dict[str, object] = {
        "Node": draw(rarely(st.fixed_dictionaries({"Address": addresses}), json_values, 10)),
        "Service": draw(rarely(st.just(service), json_values, 12)),
        "Checks": draw(rarely(st.just(checks), json_values, 12)),
    }
    if draw(st.integers(0, 9)) == 1:
        del entry[draw(st.sampled_from(list(entry)))]
    return draw(rarely(st.just(entry), json_values, 15))


@_budget.fuzz(examples=100)
@given(rarely(st.lists(health_entries(), max_size=5), json_values, 15))
def test_consul_health_answers_give_valid_endpoints_or_record_error(answer: object) -> None:
    try:
        snapshot = endpoints_from_health(SERVICE, answer)
    except RecordError:
        assert not isinstance(answer, list)
        return
    assert isinstance(answer, list)
    event(f"{len(snapshot.endpoints)} endpoints, {snapshot.rejected} rejected")
    assert len(snapshot.endpoints) + snapshot.rejected <= len(answer)
    for endpoint in snapshot.endpoints:
        _check_endpoint(endpoint, SERVICE)


@_budget.fuzz(examples=100)
@given(
    st.integers()
    | st.text(max_size=30)
    | st.sampled_from(["", " 12 ", "1_000", "0x10", "-0", "\uff19", "1" * 5000])
    | json_values,
    st.integers(0, 1 << 64),
)
def test_consul_index_headers_give_an_index_to_block_on_or_record_error(
    header: object, previous: int
) -> None:
    try:
        index = parse_index(header)
    except RecordError:
        return
    assert type(index) is int and index >= 0
    following = next_index(previous, index)
    assert following == 0 if index < previous else following == max(index, 1)


TXT_BASES = [
    encode_txt(Endpoint(SERVICE, "e-1", "10.99.0.5", 7700)),
    encode_txt(
        Endpoint(SERVICE, "e-2", "10.99.0.6", 7701, "oip-grpc", "d6f1", "rack-2", 40, 16,
                 (("gpu", "a100"), ("eq", "a=b")))
    ),
]  # fmt: skip


@st.composite
def txt_records(draw: st.DrawFn) -> bytes:
    """A real TXT record with a few bytes overwritten, inserted or cut."""
    text = bytearray(draw(st.sampled_from(TXT_BASES)))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["set", "insert", "cut"]))
        at = draw(st.integers(0, len(text)))
        if op == "set" and at < len(text):
            text[at] = draw(st.integers(0, 255) | st.sampled_from(list(b"=Ss\x00\xff")))
        elif op == "insert":
            text[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del text[at : at + draw(st.integers(1, 20))]
    return bytes(text)


instance_names = rarely(
    st.builds(instance_name, names),
    st.text(max_size=30) | st.builds(lambda n: n + "._arrowmesh._tcp.local", names),
    4,
)


@_budget.fuzz(examples=150)
@given(txt_records(), instance_names, st.integers(0, 65535))
def test_mutated_txt_records_give_a_valid_endpoint_or_record_error(
    text: bytes, name: str, port: int
) -> None:
    service = service_of_txt(text)  # must never raise: it names the rejected record's service
    assert service is None or isinstance(service, str)
    try:
        endpoint = endpoint_from_txt(name, "10.99.0.5", port, text)
    except RecordError as exc:
        event(f"refused: {str(exc)[:30]}")
        return
    event("accepted")
    _check_endpoint(endpoint, endpoint.service)
    assert endpoint.id == instance_id(name, SERVICE_TYPE)
    assert service == endpoint.service  # the salvage reader agrees with the decoder
    again = endpoint_from_txt(name, "10.99.0.5", port, encode_txt(endpoint))
    assert again == endpoint


uri_parts = st.sampled_from(
    ["consul://", "consul+https://", "mdns://", "static://", "static:///", "CONSUL://", "http://",
     "consul:", "mdns:", "", "//", "consul:///"]
)  # fmt: skip
netlocs = st.sampled_from(
    ["127.0.0.1:8500", "[::1]:8500", "[::1", "host:0", "host:65536", "host:-1", "tok@host:1",
     "a@b@c:1", ":8500", "h:x", "%41:1", "@", "[]", "xn--", "h:1:2", "\uff0e:1"]
) | st.text(string.printable, max_size=12)  # fmt: skip
queries = st.sampled_from(["", "?interface=lo", "?interface=", "?token=x", "?token=a&token=b",
                           "?x=1", "?&", "?=", "?interface=lo,eth0,", "?;", "?%zz"])  # fmt: skip
uris = (
    st.builds(
        lambda a, b, c, d: a + b + c + d,
        uri_parts,
        netlocs,
        st.sampled_from(["", "/", "/p/m.yaml", "/%00"]),
        queries,
    )
    | st.text(max_size=40)
    | st.none()
)
envs = st.fixed_dictionaries(
    {},
    optional={
        "CONSUL_HTTP_ADDR": netlocs | st.builds(lambda n: "https://" + n, netlocs),
        "CONSUL_HTTP_TOKEN": st.text(max_size=8),
        "CONSUL_HTTP_SSL": st.sampled_from(["1", "true", "no", ""]),
    },
)


@_budget.fuzz(examples=150)
@given(uris, envs)
def test_discovery_uris_parse_to_a_usable_registry_or_invalid_discovery_uri(
    uri: str | None, env: dict[str, str]
) -> None:
    try:
        parsed = parse_discovery_uri(uri, env)
    except InvalidDiscoveryUri as exc:
        event(f"refused: {str(exc)[:20]}")
        return
    event(type(parsed).__name__)
    if isinstance(parsed, ConsulUri):
        assert parsed.host and 0 < parsed.port < 65536 and parsed.scheme in ("http", "https")
        assert ("token='***'" if parsed.token else "token=''") in repr(parsed)
    elif isinstance(parsed, MdnsUri):
        assert parsed.interfaces and all(parsed.interfaces)
    else:
        assert isinstance(parsed, StaticUri) and parsed.path

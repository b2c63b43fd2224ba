"""--discovery URIs (DESIGN.md): consul://, mdns://, static://, and the default."""

from __future__ import annotations

import pytest

from discovery import ConsulUri, InvalidDiscoveryUri, MdnsUri, StaticUri, parse_discovery_uri


def test_default_is_consul_when_consul_http_addr_is_set_else_mdns() -> None:
    env = {"CONSUL_HTTP_ADDR": "https://consul.internal:8501", "CONSUL_HTTP_TOKEN": "s3cret"}
    assert parse_discovery_uri(None, env) == ConsulUri("consul.internal", 8501, "https", "s3cret")
    assert parse_discovery_uri(None, {}) == MdnsUri(("lo",))


@pytest.mark.parametrize(
    ("uri", "env", "expected"),
    [
        ("consul://10.0.0.2:8500", {}, ConsulUri("10.0.0.2", 8500)),
        ("consul://agent", {}, ConsulUri("agent", 8500)),
        ("consul://", {"CONSUL_HTTP_ADDR": "c:9"}, ConsulUri("c", 9)),
        ("consul://", {}, ConsulUri("127.0.0.1", 8500)),
        ("consul://h:1?token=t", {"CONSUL_HTTP_TOKEN": "env"}, ConsulUri("h", 1, token="t")),
        ("consul://h:1", {"CONSUL_HTTP_TOKEN": "env"}, ConsulUri("h", 1, token="env")),
        ("consul://tok@h:1", {}, ConsulUri("h", 1, token="tok")),
        ("consul+https://h:1", {}, ConsulUri("h", 1, "https")),
        ("mdns://", {}, MdnsUri(("lo",))),
        ("mdns://?interface=eth0", {}, MdnsUri(("eth0",))),
        ("mdns://?interface=eth0,eth1", {}, MdnsUri(("eth0", "eth1"))),
        ("static:///etc/mesh.yaml", {}, StaticUri("/etc/mesh.yaml")),
    ],
)
def test_uri_forms(uri: str, env: dict[str, str], expected: object) -> None:
    assert parse_discovery_uri(uri, env) == expected


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("etcd://h:1", "scheme 'etcd'"),
        ("consul://h:1?wait=3", "unknown parameter"),
        ("consul://h:port", "bad Consul address"),
        ("mdns://host", "takes no host"),
        ("mdns://?iface=x", "unknown parameter"),
        ("static://relative.yaml", "absolute"),
    ],
)
def test_bad_uris_raise_naming_the_problem(uri: str, says: str) -> None:
    with pytest.raises(InvalidDiscoveryUri, match=says):
        parse_discovery_uri(uri, {})


def test_token_never_shows_in_repr() -> None:
    assert "s3cret" not in repr(ConsulUri("h", 1, token="s3cret"))

"""`--discovery` URIs (DESIGN.md): consul://HOST:PORT, mdns://[?interface=IF], static:///path.

Parsing is pure: the environment comes in as a mapping, so nothing reads it at import time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from ._errors import InvalidDiscoveryUri


@dataclass(frozen=True, slots=True)
class ConsulUri:
    """A Consul agent's HTTP API: where, how, and the ACL token if any."""

    host: str
    port: int
    scheme: Literal["http", "https"] = "http"
    token: str = ""

    def __repr__(self) -> str:  # never print the token
        token = "***" if self.token else ""
        return f"ConsulUri({self.scheme}://{self.host}:{self.port}, token={token!r})"


@dataclass(frozen=True, slots=True)
class MdnsUri:
    """mDNS on explicit interfaces (names like 'lo', 'eth0', or IP addresses)."""

    interfaces: tuple[str, ...] = ("lo",)


@dataclass(frozen=True, slots=True)
class StaticUri:
    """A YAML or JSON file listing endpoints per service."""

    path: str


DiscoveryUri = ConsulUri | MdnsUri | StaticUri


def parse_discovery_uri(uri: str | None, env: Mapping[str, str]) -> DiscoveryUri:
    """Parse a `--discovery` value; None picks consul if CONSUL_HTTP_ADDR is set, else mdns.

    Raises InvalidDiscoveryUri naming what is wrong.
    """
    if not uri:
        uri = "consul://" if env.get("CONSUL_HTTP_ADDR") else "mdns://"
    try:
        parts = urlsplit(uri)
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise InvalidDiscoveryUri(f"discovery URI {uri!r} is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme in ("consul", "consul+https"):
        return _consul(uri, parts.netloc, query, env, "https" if scheme.endswith("https") else None)
    if scheme == "mdns":
        if parts.netloc or parts.path not in ("", "/"):
            raise InvalidDiscoveryUri(f"discovery URI {uri!r}: mdns takes no host or path")
        unknown = set(query) - {"interface"}
        if unknown:
            raise InvalidDiscoveryUri(f"discovery URI {uri!r}: unknown parameter {sorted(unknown)}")
        interfaces = tuple(i for v in query.get("interface", []) for i in v.split(",") if i)
        return MdnsUri(interfaces or ("lo",))
    if scheme == "static":
        if parts.netloc or not parts.path:
            raise InvalidDiscoveryUri(
                f"discovery URI {uri!r}: write static:///absolute/path/to/mesh.yaml"
            )
        return StaticUri(unquote(parts.path))
    raise InvalidDiscoveryUri(
        f"discovery URI {uri!r}: scheme {parts.scheme!r} is not consul://, mdns:// or static://"
    )


def _consul(
    uri: str,
    netloc: str,
    query: Mapping[str, list[str]],
    env: Mapping[str, str],
    scheme: Literal["http", "https"] | None,
) -> ConsulUri:
    unknown = set(query) - {"token"}
    if unknown:
        raise InvalidDiscoveryUri(f"discovery URI {uri!r}: unknown parameter {sorted(unknown)}")
    token = query["token"][-1] if "token" in query else env.get("CONSUL_HTTP_TOKEN", "")
    if "@" in netloc:  # consul://TOKEN@host:port
        token, netloc = netloc.rsplit("@", 1)
        token = unquote(token)
    if not netloc:
        netloc = env.get("CONSUL_HTTP_ADDR", "") or "127.0.0.1:8500"
        if "://" in netloc:
            env_scheme, netloc = netloc.split("://", 1)
            scheme = scheme or ("https" if env_scheme.lower() == "https" else "http")
    if scheme is None:
        ssl = env.get("CONSUL_HTTP_SSL", "").lower() in ("1", "true", "yes")
        scheme = "https" if ssl else "http"
    try:
        host_parts = urlsplit(f"//{netloc}")
        host, port = host_parts.hostname, host_parts.port
    except ValueError as exc:
        raise InvalidDiscoveryUri(
            f"discovery URI {uri!r}: bad Consul address {netloc!r}: {exc}"
        ) from None
    if not host:
        raise InvalidDiscoveryUri(f"discovery URI {uri!r}: no Consul host in {netloc!r}")
    return ConsulUri(host=host, port=port or 8500, scheme=scheme, token=token)

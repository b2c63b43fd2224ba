"""Endpoint: one replica of a service, as every registry describes it.

Registries carry metadata as flat string maps (Consul `Meta`, mDNS TXT records, static
files); `Endpoint.to_meta` and `Endpoint.from_record` are the one translation both ways, so
a malformed record is rejected in one place with a `RecordError` that says which key.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, cast, get_args

from ._errors import RecordError

Protocol = Literal["mesh", "http", "oip-http", "oip-grpc"]
PROTOCOLS: Final = frozenset(get_args(Protocol))

# Keys the mesh owns inside a registry's metadata map; everything else is carried as `extra`.
META_KEYS: Final = ("protocol", "shm_domain", "zone", "weight", "capacity")

# Consul's rule for meta keys (consul-api.md §2.1), also safe for TXT records and YAML.
_META_KEY = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
MAX_META_VALUE: Final = 512
MAX_WEIGHT: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One replica: where it listens and what the mesh knows about it.

    `capacity` is how many requests it takes at once (0: not advertised). `extra` holds any
    other metadata, sorted, so endpoints compare and hash by value.
    """

    service: str
    id: str
    address: str
    port: int
    protocol: Protocol = "mesh"
    shm_domain: str = ""
    zone: str = ""
    weight: int = 1
    capacity: int = 0
    extra: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        for what, value in (("service", self.service), ("id", self.id)):
            if not _NAME.match(value):
                raise RecordError(
                    f"endpoint {what} {value!r} is not a name: 1-63 characters of letters,"
                    " digits, '_', '-', '.', starting with a letter or digit"
                )
        if not self.address:
            raise RecordError(f"endpoint {self.id!r} has no address")
        if not 0 < self.port < 65536:
            raise RecordError(f"endpoint {self.id!r} port {self.port} is not in 1..65535")
        if self.protocol not in PROTOCOLS:
            raise RecordError(
                f"endpoint {self.id!r} protocol {self.protocol!r} is not one of {sorted(PROTOCOLS)}"
            )
        if not 0 < self.weight <= MAX_WEIGHT:
            raise RecordError(
                f"endpoint {self.id!r} weight {self.weight} is not in 1..{MAX_WEIGHT}"
            )
        if self.capacity < 0:
            raise RecordError(f"endpoint {self.id!r} capacity {self.capacity} is negative")
        for key, value in self.extra:
            _check_meta(self.id, key, value)
            if key in META_KEYS:
                raise RecordError(f"endpoint {self.id!r} extra key {key!r} is a reserved key")

    @property
    def authority(self) -> str:
        """`host:port`, with IPv6 addresses in brackets: what `connect()` takes."""
        if ":" in self.address:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"

    def to_meta(self) -> dict[str, str]:
        """The flat string map a registry stores (empty and default values left out)."""
        meta = dict(self.extra)
        meta["protocol"] = self.protocol
        if self.shm_domain:
            meta["shm_domain"] = self.shm_domain
        if self.zone:
            meta["zone"] = self.zone
        if self.weight != 1:
            meta["weight"] = str(self.weight)
        if self.capacity:
            meta["capacity"] = str(self.capacity)
        return meta

    @classmethod
    def from_record(
        cls, service: str, id: str, address: str, port: int, meta: Mapping[str, str]
    ) -> Endpoint:
        """Build an endpoint from a registry record; raises RecordError saying what is wrong."""
        for key, value in meta.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise RecordError(f"endpoint {id!r} meta {key!r}: keys and values must be strings")
        protocol = meta.get("protocol", "mesh")
        if protocol not in PROTOCOLS:
            raise RecordError(
                f"endpoint {id!r} protocol {protocol!r} is not one of {sorted(PROTOCOLS)}"
            )
        return cls(
            service=service,
            id=id,
            address=address,
            port=port,
            protocol=cast(Protocol, protocol),
            shm_domain=meta.get("shm_domain", ""),
            zone=meta.get("zone", ""),
            weight=_int_meta(id, meta, "weight", 1),
            capacity=_int_meta(id, meta, "capacity", 0),
            extra=tuple(sorted((k, v) for k, v in meta.items() if k not in META_KEYS)),
        )


def check_address(address: str) -> str:
    """An address a peer can dial: an IP literal or a DNS name, never a wildcard."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        if not re.match(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$", address):
            raise RecordError(
                f"address {address!r} is neither an IP address nor a host name"
            ) from None
        return address
    if ip.is_unspecified:
        raise RecordError(f"address {address!r} is a wildcard; advertise a reachable address")
    return address


def _check_meta(endpoint_id: str, key: str, value: str) -> None:
    if not _META_KEY.match(key) or key.startswith("consul-"):
        raise RecordError(
            f"endpoint {endpoint_id!r} meta key {key!r} must be 1-128 of [A-Za-z0-9_-]"
            " and not start with 'consul-'"
        )
    if len(value) > MAX_META_VALUE:
        raise RecordError(
            f"endpoint {endpoint_id!r} meta {key!r} is {len(value)} characters,"
            f" over {MAX_META_VALUE}"
        )


def _int_meta(endpoint_id: str, meta: Mapping[str, str], key: str, default: int) -> int:
    raw = meta.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise RecordError(
            f"endpoint {endpoint_id!r} meta {key}={raw!r} is not an integer"
        ) from None

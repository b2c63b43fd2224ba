"""mDNS records <-> `Endpoint`: the DNS-SD names and TXT record of one endpoint (sans-IO).

One endpoint is one DNS-SD service instance of type `_arrowmesh._tcp.local.`:

    <id>._arrowmesh._tcp.local.      PTR target; the instance label is the endpoint id
    SRV                              port, target <id>.arrowmesh.local.
    A                                the endpoint's address
    TXT  txtvers=1 service=<name> epoch=<token> protocol=mesh [shm_domain= zone= weight=
         capacity= extra...]

`epoch` is a fresh token per advertisement. Receivers (zeroconf among them) drop a packet
identical to one seen in the last second, and every announcement or goodbye of one record
set is identical: without it, a quick withdraw and re-advertise would be dropped as an echo.

The invariants the codec keeps (RFC 6763 §6):
- every TXT string is `key=value`, at most 255 bytes, keys printable ASCII without '=';
- keys are unique ignoring case (DNS-SD keys are case-insensitive);
- the whole record is at most `MAX_TXT_SIZE` bytes, so it fits one packet with the rest;
- `txtvers`, `service` and `epoch` are ours: an endpoint's extra metadata may not use them.

Anything else received is a `RecordError` naming the instance and what was wrong; the
registry logs it and skips the record. Decoding never raises anything else.
"""

from __future__ import annotations

from typing import Final

from ._endpoint import Endpoint
from ._errors import RecordError

SERVICE_TYPE: Final = "_arrowmesh._tcp.local."
TXT_VERSION: Final = "1"
# RFC 6763 §6.2: keep the TXT record within 1300 bytes so a response fits one Ethernet frame.
MAX_TXT_SIZE: Final = 1300
MAX_TXT_STRING: Final = 255  # one length byte (RFC 1035 §3.3.14)
RESERVED_KEYS: Final = ("txtvers", "service", "epoch")
EPOCH_SIZE: Final = 8  # characters of the epoch token
# The SRV target's domain: a name of our own, so endpoint ids never collide with host names.
HOST_DOMAIN: Final = "arrowmesh.local."


def instance_name(endpoint_id: str, service_type: str = SERVICE_TYPE) -> str:
    """The DNS-SD instance name advertised for `endpoint_id`."""
    return f"{endpoint_id}.{service_type}"


def host_name(endpoint_id: str) -> str:
    """The SRV target (host name) advertised for `endpoint_id`."""
    return f"{endpoint_id}.{HOST_DOMAIN}"


def instance_id(name: str, service_type: str = SERVICE_TYPE) -> str:
    """The endpoint id in an instance name; RecordError if the name is not of `service_type`."""
    suffix = "." + service_type
    if len(name) <= len(suffix) or not name.lower().endswith(suffix.lower()):
        raise RecordError(f"mdns instance {name!r} is not of type {service_type!r}")
    return name[: -len(suffix)]


def encode_txt(endpoint: Endpoint, epoch: str = "0" * EPOCH_SIZE) -> bytes:
    """The TXT record advertising `endpoint` in advertisement `epoch`.

    Raises RecordError if a TXT record cannot hold it.
    """
    meta = endpoint.to_meta()
    seen: set[str] = set()
    for key in meta:
        folded = key.lower()
        if folded in RESERVED_KEYS:
            raise RecordError(
                f"endpoint {endpoint.id!r} meta key {key!r} is reserved by the mdns registry"
            )
        if folded in seen:
            raise RecordError(
                f"endpoint {endpoint.id!r} meta key {key!r} differs from another only in case;"
                " mdns TXT keys ignore case"
            )
        seen.add(folded)
    entries = [
        ("txtvers", TXT_VERSION),
        ("service", endpoint.service),
        ("epoch", epoch),
        *sorted(meta.items()),
    ]
    out = bytearray()
    for key, value in entries:
        try:
            string = f"{key}={value}".encode()
        except UnicodeEncodeError:
            raise RecordError(f"endpoint {endpoint.id!r} meta {key!r} is not valid text") from None
        if len(string) > MAX_TXT_STRING:
            raise RecordError(
                f"endpoint {endpoint.id!r} meta {key!r} takes {len(string)} bytes as a TXT"
                f" string, over {MAX_TXT_STRING}; shorten it to advertise over mdns"
            )
        out.append(len(string))
        out += string
    if len(out) > MAX_TXT_SIZE:
        raise RecordError(
            f"endpoint {endpoint.id!r} TXT record is {len(out)} bytes, over {MAX_TXT_SIZE};"
            " advertise less metadata over mdns"
        )
    return bytes(out)


def decode_txt(text: bytes, name: str = "?") -> dict[str, str]:
    """The `key=value` strings of a TXT record; RecordError naming the instance if malformed."""
    if len(text) > MAX_TXT_SIZE:
        raise RecordError(
            f"mdns instance {name!r} TXT record is {len(text)} bytes, over {MAX_TXT_SIZE}"
        )
    meta: dict[str, str] = {}
    folded: set[str] = set()
    pos = 0
    while pos < len(text):
        length = text[pos]
        string = text[pos + 1 : pos + 1 + length]
        pos += 1 + length
        if len(string) < length:
            raise RecordError(f"mdns instance {name!r} TXT record is truncated")
        if not string:
            continue  # RFC 6763 §6.1: an empty record is one empty string
        key, value = _split(name, string)
        if key.lower() in folded:
            raise RecordError(f"mdns instance {name!r} TXT key {key!r} appears twice")
        folded.add(key.lower())
        meta[key] = value
    return meta


def endpoint_from_txt(
    name: str, address: str, port: int, text: bytes, service_type: str = SERVICE_TYPE
) -> Endpoint:
    """The endpoint an instance's SRV/A/TXT records describe; RecordError if they do not."""
    meta = decode_txt(text, name)
    version = meta.pop("txtvers", None)
    if version != TXT_VERSION:
        raise RecordError(
            f"mdns instance {name!r} txtvers={version!r}; this arrowmesh reads {TXT_VERSION!r}"
        )
    service = meta.pop("service", None)
    if service is None:
        raise RecordError(f"mdns instance {name!r} has no service= key")
    meta.pop("epoch", None)
    return Endpoint.from_record(service, instance_id(name, service_type), address, port, meta)


def service_of_txt(text: bytes) -> str | None:
    """The service a TXT record names, read as far as its framing allows: a malformed record
    that still says which service it is for is counted against that service."""
    pos = 0
    while pos < len(text):
        string = text[pos + 1 : pos + 1 + text[pos]]
        pos += 1 + text[pos]
        if string[:8].lower() == b"service=":
            try:
                return string[8:].decode("utf-8")
            except UnicodeDecodeError:
                return None
    return None


def _split(name: str, string: bytes) -> tuple[str, str]:
    key, sep, value = string.partition(b"=")
    if not sep:
        raise RecordError(f"mdns instance {name!r} TXT string {string[:40]!r} has no '='")
    if not key or any(b < 0x20 or b > 0x7E for b in key):
        raise RecordError(
            f"mdns instance {name!r} TXT key {key[:40]!r} is not 1+ printable ASCII characters"
        )
    try:
        return key.decode("ascii"), value.decode("utf-8")
    except UnicodeDecodeError:
        raise RecordError(f"mdns instance {name!r} TXT {key!r} value is not UTF-8") from None

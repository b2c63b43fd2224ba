"""Service registrations and check updates, decoded as the agent decodes them.

consul-api.md §2.1 (fields, defaults, error texts), §2.4 (`check/update`), §3.1 (Go JSON
decoding), §3.2 (durations). Field sets follow `structs.ServiceDefinition` and
`structs.CheckType` (with their snake-case aliases) restricted to what §2.1 lists, plus the few
fields the agent accepts and ignores for a plain service (`Token`, `SocketPath`, `ServiceID`).
Check kinds the emulator does not run (UDP, H2PING, alias, Docker, OS service) are refused as
unknown fields: a loud 400 rather than a check that silently never runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from ._duration import DurationError, parse_duration
from ._errors import ApiError
from ._gojson import (
    ANY,
    BOOL,
    INT,
    STRING,
    Field,
    GoJsonError,
    GoType,
    Obj,
    decode_fields,
    decode_top,
    describe,
    list_of,
    map_of,
    parse_body,
    raw_object,
    struct_of,
)

STATUSES: Final = ("passing", "warning", "critical")
_INT64_MAX: Final = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class ServiceAddress:
    """One entry of `TaggedAddresses`."""

    address: str
    port: int


@dataclass(frozen=True, slots=True)
class Weights:
    """DNS weights; the agent defaults them to `{1, 1}` (§2.1)."""

    passing: int = 1
    warning: int = 1


@dataclass(frozen=True, slots=True)
class CheckType:
    """One check of a registration (`structs.CheckType`); durations in nanoseconds."""

    check_id: str = ""
    name: str = ""
    status: str = ""
    notes: str = ""
    script_args: tuple[str, ...] = ()
    http: str = ""
    header: tuple[tuple[str, tuple[str, ...]], ...] = ()
    method: str = ""
    body: str = ""
    disable_redirects: bool = False
    tcp: str = ""
    grpc: str = ""
    grpc_use_tls: bool = False
    tls_server_name: str = ""
    tls_skip_verify: bool = False
    interval: int = 0
    timeout: int = 0
    ttl: int = 0
    deregister_after: int = 0
    success_before_passing: int = 0
    failures_before_warning: int = 0
    failures_before_critical: int = 0
    output_max_size: int = 0

    @property
    def kind(self) -> str:
        """`Type` as the agent reports it (`structs.CheckType.Type`, same precedence)."""
        if self.grpc and self.interval > 0:
            return "grpc"
        if self.http and self.interval > 0:
            return "http"
        if self.ttl > 0:
            return "ttl"
        if self.tcp and self.interval > 0:
            return "tcp"
        return "script" if self.script_args else ""

    def problem(self) -> str | None:
        """`CheckType.Validate`'s complaint, or None."""
        interval_check = bool(self.script_args or self.http or self.tcp or self.grpc)
        if self.interval > 0 and self.ttl > 0:
            return "Interval and TTL cannot both be specified"
        if interval_check and self.interval <= 0:
            return "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"
        if not interval_check and self.ttl <= 0:
            return "TTL must be > 0 for TTL checks"
        if self.output_max_size < 0:
            return "MaxOutputMaxSize must be positive"
        if self.failures_before_warning > self.failures_before_critical:
            return "FailuresBeforeWarning can't be higher than FailuresBeforeCritical"
        return None


@dataclass(frozen=True, slots=True)
class ServiceDefinition:
    """A decoded `PUT /v1/agent/service/register` body. `None` marks a Go nil (absent/null)."""

    name: str = ""
    id: str = ""
    kind: str = ""
    tags: tuple[str, ...] | None = None
    address: str = ""
    tagged_addresses: Mapping[str, ServiceAddress] = field(default_factory=dict)
    meta: Mapping[str, str] | None = None
    port: int = 0
    socket_path: str = ""
    weights: Weights | None = None
    enable_tag_override: bool = False
    checks: tuple[CheckType | None, ...] = ()  # `Check` (unless empty), then `Checks`


# -- decoding ---------------------------------------------------------------------------------

_STRINGS: Final = list_of(STRING)
_CHECK_FIELDS: Final = (
    Field("CheckID", STRING),
    Field("Name", STRING),
    Field("Status", STRING),
    Field("Notes", STRING),
    Field("ScriptArgs", _STRINGS),
    Field("args", _STRINGS, "Args"),
    Field("script_args", _STRINGS, "ScriptArgsSnake"),
    Field("HTTP", STRING),
    Field("Header", map_of(_STRINGS)),
    Field("Method", STRING),
    Field("Body", STRING),
    Field("DisableRedirects", BOOL),
    Field("TCP", STRING),
    Field("GRPC", STRING),
    Field("GRPCUseTLS", BOOL),
    Field("grpc_use_tls", BOOL, "GRPCUseTLSSnake"),
    Field("TLSServerName", STRING),
    Field("tls_server_name", STRING, "TLSServerNameSnake"),
    Field("TLSSkipVerify", BOOL),
    Field("tls_skip_verify", BOOL, "TLSSkipVerifySnake"),
    # The agent decodes durations into interface{}: a string is parsed, a number is
    # nanoseconds, anything else is ignored (`CheckType.UnmarshalJSON`).
    Field("Interval", ANY),
    Field("Timeout", ANY),
    Field("TTL", ANY),
    Field("DeregisterCriticalServiceAfter", ANY),
    Field("deregister_critical_service_after", ANY, "DeregisterCriticalServiceAfterSnake"),
    Field("SuccessBeforePassing", INT),
    Field("FailuresBeforeWarning", INT),
    Field("FailuresBeforeCritical", INT),
    Field("OutputMaxSize", INT),
    Field("ServiceID", STRING),  # accepted and ignored by the agent
    Field("service_id", STRING, "ServiceIDSnake"),
)


def _decode_check(value: object, name: str) -> object:
    if not isinstance(value, Obj):
        what = describe(value)
        raise GoJsonError(f"json: cannot unmarshal {what} into Go value of type structs.CheckType")
    # A fresh decoder in CheckType.UnmarshalJSON: field paths restart at the check.
    return _check_from(decode_fields(value, _CHECK_FIELDS))


CHECK_TYPE: Final = GoType("structs.CheckType", _decode_check)
_SERVICE_ADDRESS: Final = struct_of(
    "structs.ServiceAddress", (Field("Address", STRING), Field("Port", INT)), zero={}
)
_TAGGED: Final = map_of(_SERVICE_ADDRESS)
_SERVICE_FIELDS: Final = (
    Field("enable_tag_override", BOOL, "EnableTagOverrideSnake"),
    Field("tagged_addresses", _TAGGED, "TaggedAddressesSnake"),
    Field("Kind", GoType("structs.ServiceKind", STRING.decode, "")),
    Field("ID", STRING),
    Field("Name", STRING),
    Field("Tags", _STRINGS),
    Field("Address", STRING),
    Field("TaggedAddresses", _TAGGED),
    Field("Meta", map_of(STRING)),
    Field("Port", INT),
    Field("SocketPath", STRING),
    Field("Check", CHECK_TYPE),
    Field("Checks", list_of(CHECK_TYPE, "structs.CheckTypes")),
    Field("Weights", struct_of("structs.Weights", (Field("Passing", INT), Field("Warning", INT)))),
    Field("Token", STRING),
    Field("EnableTagOverride", BOOL),
    Field("Proxy", raw_object("structs.ConnectProxyConfig")),
    Field("Connect", raw_object("structs.ServiceConnect")),
)


def _duration(value: object) -> int:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except DurationError as exc:
            raise GoJsonError(str(exc)) from None
    if isinstance(value, float):
        # time.Duration(float64): truncation toward zero, saturating like amd64 does.
        return max(-_INT64_MAX - 1, min(_INT64_MAX, int(value)))
    return 0


def _str(raw: Mapping[str, object], key: str) -> str:
    value = raw.get(key, "")
    return value if isinstance(value, str) else ""


def _int(raw: Mapping[str, object], key: str) -> int:
    value = raw.get(key, 0)
    return value if isinstance(value, int) else 0


def _strings(value: object) -> tuple[str, ...]:
    return tuple(item for item in value if isinstance(item, str)) if isinstance(value, list) else ()


def _check_from(raw: Mapping[str, object]) -> CheckType:
    """Apply `CheckType.UnmarshalJSON`'s alias rules: the canonical field wins when set."""
    dcsa = raw.get("DeregisterCriticalServiceAfter")
    header = raw.get("Header")
    headers = header if isinstance(header, dict) else {}
    return CheckType(
        check_id=_str(raw, "CheckID"),
        name=_str(raw, "Name"),
        status=_str(raw, "Status"),
        notes=_str(raw, "Notes"),
        script_args=_strings(raw.get("ScriptArgs"))
        or _strings(raw.get("Args"))
        or _strings(raw.get("ScriptArgsSnake")),
        http=_str(raw, "HTTP"),
        header=tuple(sorted((k, _strings(v)) for k, v in headers.items())),
        method=_str(raw, "Method"),
        body=_str(raw, "Body"),
        disable_redirects=raw.get("DisableRedirects") is True,
        tcp=_str(raw, "TCP"),
        grpc=_str(raw, "GRPC"),
        grpc_use_tls=raw.get("GRPCUseTLS") is True or raw.get("GRPCUseTLSSnake") is True,
        tls_server_name=_str(raw, "TLSServerName") or _str(raw, "TLSServerNameSnake"),
        tls_skip_verify=raw.get("TLSSkipVerify") is True or raw.get("TLSSkipVerifySnake") is True,
        interval=_duration(raw.get("Interval")),
        timeout=_duration(raw.get("Timeout")),
        ttl=_duration(raw.get("TTL")),
        deregister_after=_duration(
            dcsa if dcsa is not None else raw.get("DeregisterCriticalServiceAfterSnake")
        ),
        success_before_passing=_int(raw, "SuccessBeforePassing"),
        failures_before_warning=_int(raw, "FailuresBeforeWarning"),
        failures_before_critical=_int(raw, "FailuresBeforeCritical"),
        output_max_size=_int(raw, "OutputMaxSize"),
    )


def _tagged(value: object) -> dict[str, ServiceAddress]:
    if not isinstance(value, dict):
        return {}
    return {
        key: ServiceAddress(_str(entry, "Address"), _int(entry, "Port"))
        for key, entry in value.items()
        if isinstance(entry, dict)
    }


def _definition_from(raw: Mapping[str, object]) -> ServiceDefinition:
    tags, meta, weights = raw.get("Tags"), raw.get("Meta"), raw.get("Weights")
    tagged = _tagged(raw.get("TaggedAddresses")) or _tagged(raw.get("TaggedAddressesSnake"))
    check, checks = raw.get("Check"), raw.get("Checks")
    listed = (
        [c if isinstance(c, CheckType) else None for c in checks]
        if isinstance(checks, list)
        else []
    )
    lone = [check] if isinstance(check, CheckType) and check != CheckType() else []
    return ServiceDefinition(
        name=_str(raw, "Name"),
        id=_str(raw, "ID"),
        kind=_str(raw, "Kind"),
        tags=_strings(tags) if isinstance(tags, list) else None,
        address=_str(raw, "Address"),
        tagged_addresses=tagged,
        meta={k: v for k, v in meta.items() if isinstance(v, str)}
        if isinstance(meta, dict)
        else None,
        port=_int(raw, "Port"),
        socket_path=_str(raw, "SocketPath"),
        weights=Weights(_int(weights, "Passing"), _int(weights, "Warning"))
        if isinstance(weights, dict)
        else None,
        enable_tag_override=raw.get("EnableTagOverride") is True
        or raw.get("EnableTagOverrideSnake") is True,
        checks=(*lone, *listed),
    )


def decode_registration(body: bytes) -> ServiceDefinition:
    """The register body, or `400 Request decode failed: <Go error>`."""
    try:
        raw = decode_top(parse_body(body), "structs.ServiceDefinition", _SERVICE_FIELDS)
        return _definition_from(raw)
    except GoJsonError as exc:
        raise ApiError(400, f"Request decode failed: {exc}") from None


_UPDATE_FIELDS: Final = (Field("Status", STRING), Field("Output", STRING))


def decode_check_update(body: bytes) -> tuple[str, str]:
    """`(Status, Output)` of a `check/update` body; 400 on bad JSON or status (§2.4)."""
    try:
        raw = decode_top(parse_body(body), "agent.checkUpdate", _UPDATE_FIELDS)
    except GoJsonError as exc:
        raise ApiError(400, f"Request decode failed: {exc}") from None
    status, output = _str(raw, "Status"), _str(raw, "Output")
    if status not in STATUSES:
        raise ApiError(400, f"Invalid check status: '{status}'")
    return status, output

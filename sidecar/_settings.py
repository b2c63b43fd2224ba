"""The one settings object: `ARROWMESH_*` environment variables (flags and YAML come with
`sidecar run`, see `_config.py`), turned into the frozen values the cores take.

Every field is a setting with three spellings: the field name is the YAML key (`mesh_addr`),
`ARROWMESH_` + its upper case is the environment variable, `--` + its dashed form the flag.
`Settings()` alone reads keyword arguments, then `os.environ`; `sidecar run` adds flags and
the YAML file through `build_settings`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Annotated, ClassVar, Final, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from discovery import InvalidDiscoveryUri, parse_discovery_uri
from transport import Limits, ShmDomain

_DEFAULTS = Limits()

AppProtocol = Literal["mesh", "oip-http", "oip-grpc", "http"]
AppEncoding = Literal["auto", "binary", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["json", "text"]
Origin = Literal["flag", "env", "file", "default"]

MAX_WEIGHT: Final = 1_000_000  # discovery's Endpoint accepts weights in 1..MAX_WEIGHT
# The rule discovery's Endpoint applies to service names and ids (DNS label sized).
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_TRUST_DOMAIN: Final = re.compile(r"^[a-z0-9._-]{1,255}$")  # SPIFFE: lowercase, no port
DEFAULT_TRUST_DOMAIN: Final = "arrowmesh.local"
# An OIP model name goes in a URL path (quoted by the client): anything printable will do.
_MODEL: Final = re.compile(r"^[^\s\x00-\x1f\x7f]{1,255}$")
_HOSTNAME: Final = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")
_SECRET_WORD: Final = re.compile(r"token|secret|password|passwd|key", re.IGNORECASE)
MASK: Final = "***"

# URL schemes each kind of app is reached by, with an example for error messages.
APP_SCHEMES: Final[Mapping[str, tuple[frozenset[str], str]]] = {
    "mesh": (frozenset({"tcp", "unix"}), "tcp://127.0.0.1:9000 or unix:///run/app.sock"),
    "http": (frozenset({"http", "https"}), "http://127.0.0.1:8000"),
    "oip-http": (frozenset({"http", "https"}), "http://127.0.0.1:8000"),
    "oip-grpc": (frozenset({"grpc", "grpcs"}), "grpc://127.0.0.1:8001"),
}


def parse_host_port(value: str) -> tuple[str, int]:
    """Split `HOST:PORT` (IPv6 in brackets) into host (brackets off) and port (0: any free).

    Raises ValueError saying what is wrong, the value included.
    """
    host, sep, port = value.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()):
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:7701 or [::1]:7701)")
    if int(port) > 65535:
        raise ValueError(f"{value!r}: port {int(port)} is not in 0..65535 (0: any free port)")
    if host.startswith("[") and host.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(host[1:-1])), int(port)
        except ValueError:
            raise ValueError(f"{value!r}: {host} is not an IPv6 address") from None
    if ":" in host:
        raise ValueError(f"{value!r}: an IPv6 host goes in brackets, e.g. [::1]:7700")
    if not _HOSTNAME.match(host):
        raise ValueError(f"{value!r}: {host!r} is neither an IP address nor a host name")
    return host, int(port)


def format_host_port(host: str, port: int) -> str:
    """`host:port`, with an IPv6 host in brackets (the form listeners are reported in)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def redact_uri(uri: str) -> str:
    """`uri` with its user-info (a Consul token) and secret-looking query values masked."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return MASK  # unparseable: it cannot be shown safely
    # Edit the text in place: urlunsplit would rewrite `mdns://?x` as `mdns:?x`.
    if "@" in parts.netloc:
        host = parts.netloc.rsplit("@", 1)[1]
        uri = uri.replace(f"//{parts.netloc}", f"//{MASK}@{host}", 1)
    if parts.query:
        pairs = [pair.partition("=") for pair in parts.query.split("&")]
        query = "&".join(
            f"{k}{eq}{MASK if eq and _SECRET_WORD.search(unquote(k)) else v}" for k, eq, v in pairs
        )
        uri = uri.replace(f"?{parts.query}", f"?{query}", 1)
    return uri


def _blank_is_none(value: object) -> object:
    # An empty flag or environment variable means "not set" (ARROWMESH_APP= in compose files).
    return None if isinstance(value, str) and not value.strip() else value


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _check_name(value: str | None) -> str | None:
    if value is not None and not _NAME.match(value):
        raise ValueError(
            f"{value!r} is not a name: 1-63 letters, digits, '_', '-', '.',"
            " starting with a letter or digit"
        )
    return value


def _check_host_port(value: str) -> str:
    parse_host_port(value)
    return value


def _check_host(value: str | None) -> str | None:
    if value is None:
        return None
    host = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.match(host):
            raise ValueError(f"{value!r} is neither an IP address nor a host name") from None
        return host
    if ip.is_unspecified:
        raise ValueError(f"{value!r} is a wildcard; advertise an address peers can reach")
    return str(ip)


def _check_discovery(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_discovery_uri(value, {})  # syntax only: the environment matters at run time
        except InvalidDiscoveryUri as exc:
            raise ValueError(str(exc).replace(value, redact_uri(value))) from None
    return value


def _is_app_url(value: str, schemes: frozenset[str]) -> bool:
    try:
        parts = urlsplit(value)
        if parts.scheme == "unix":
            return parts.scheme in schemes and bool(parts.path) and not parts.netloc
        parts.port  # noqa: B018  # raises ValueError on a bad port
    except ValueError:
        return False
    return parts.scheme in schemes and bool(parts.hostname)


def _check_trust_domain(value: str) -> str:
    if not _TRUST_DOMAIN.match(value):
        raise ValueError(
            f"{value!r} is not a trust domain: lowercase letters, digits, '.', '-', '_'"
        )
    return value


def _check_loopback(value: str | None) -> str | None:
    if value is None:
        return None
    _check_host_port(value)
    host = value.rpartition(":")[0].strip("[]")
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise ValueError(f"{value!r} is not a loopback address: the plaintext listener stays local")
    return value


def _check_zone(value: str) -> str:
    return value and str(_check_name(value))


def _check_model(value: str | None) -> str | None:
    if value is not None and not _MODEL.match(value):
        raise ValueError(
            f"{value!r} is not a model name: 1-255 characters, no spaces or control characters"
        )
    return value


def _check_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is not an HTTP path: it must start with '/'")
    return value


Name = Annotated[str | None, BeforeValidator(_blank_is_none), AfterValidator(_check_name)]
HostPort = Annotated[str, AfterValidator(_check_host_port)]
OptionalStr = Annotated[str | None, BeforeValidator(_blank_is_none)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]

SourceFactory = Callable[[type[BaseSettings]], tuple[PydanticBaseSettingsSource, ...]]
# pydantic-settings has no public per-instance way to pass sources (`_build_sources` is
# private and changing shape), so `build_settings` hands them over for one construction.
_RUN_SOURCES: ContextVar[SourceFactory | None] = ContextVar("_RUN_SOURCES", default=None)


BalancerName = Literal["peak_ewma", "least_request", "round_robin", "ring_hash"]


class ServiceOverrides(BaseModel):
    """Routing settings of one service that differ from the defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    balancer: BalancerName | None = None
    max_attempts: int | None = Field(None, ge=1, le=10)
    retry_budget_ratio: float | None = Field(None, ge=0.0, le=1.0)
    hedge: bool | None = None
    eject_after: int | None = Field(None, ge=0)
    max_ejected: float | None = Field(None, ge=0.0, le=1.0)
    queue_limit: int | None = Field(None, ge=0)  # the sidecar fronting this service sheds


def _json_object(value: object) -> object:
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"{value!r} is not a JSON object: {exc}") from None
    return value


class Settings(BaseSettings):
    """Every arrowmesh setting; each field has an `ARROWMESH_<NAME>` environment twin.

    Raises pydantic.ValidationError naming the setting that is wrong.
    """

    model_config = SettingsConfigDict(
        env_prefix="ARROWMESH_",
        frozen=True,
        extra="ignore",
        coerce_numbers_to_str=True,  # YAML `zone: 1` or `id: 42` mean the strings
        hide_input_in_errors=True,  # a bad discovery URI may carry a token
    )

    # Fields whose values are secrets: masked whole by `redacted()` (issue 10 adds key
    # tokens here; a test fails when a secret-sounding field is missing from this set).
    SECRET_FIELDS: ClassVar[frozenset[str]] = frozenset({"admin_token"})
    # Fields holding URIs that may carry credentials: user-info and token query masked.
    URI_FIELDS: ClassVar[frozenset[str]] = frozenset({"app", "discovery"})

    service: Name = Field(None, description="name of the service this sidecar fronts (required)")
    id: Name = Field(None, description="this endpoint's id in the registry (default: derived)")
    app_protocol: Annotated[AppProtocol, BeforeValidator(_lower)] = Field(
        "mesh", description="what the local app speaks"
    )
    app: OptionalStr = Field(
        None, description="URL of the local app to front (none: this sidecar only routes)"
    )
    discovery: Annotated[OptionalStr, AfterValidator(_check_discovery)] = Field(
        None,
        description="consul://HOST:PORT, mdns://[?interface=IF] or static:///path.yaml"
        " (default: consul if CONSUL_HTTP_ADDR is set, else mdns)",
    )
    mesh_addr: HostPort = Field("0.0.0.0:7700", description="mesh listener, for peers")
    http_addr: HostPort = Field("127.0.0.1:7701", description="local HTTP listener (OIP v2)")
    grpc_addr: HostPort = Field("127.0.0.1:7702", description="local gRPC listener (OIP v2)")
    admin_addr: HostPort = Field("127.0.0.1:7790", description="admin listener (health, metrics)")
    shm_dir: str = Field(
        "/dev/shm/arrowmesh", description="shared-memory directory ('' turns shared memory off)"
    )
    advertise_addr: Annotated[OptionalStr, AfterValidator(_check_host)] = Field(
        None, description="host peers dial to reach the mesh listener (default: derived)"
    )
    config: OptionalStr = Field(None, description="YAML file of settings (flags and env win)")
    ready_file: OptionalStr = Field(
        None, description="JSON file written once every listener is bound and registered"
    )
    drain_timeout: Seconds = Field(30.0, description="seconds in-flight requests get on SIGTERM")
    hello_timeout: Seconds = Field(
        10.0,
        description="seconds a connection to the mesh port has to say HELLO before it is closed",
    )
    zone: Annotated[str, AfterValidator(_check_zone)] = Field(
        "", description="locality zone advertised to peers"
    )
    weight: int = Field(1, ge=1, le=MAX_WEIGHT, description="balancing weight advertised")
    capacity: int = Field(0, ge=0, description="concurrent requests advertised (0: not advertised)")
    app_health_interval: Seconds = Field(1.0, description="seconds between app health checks")
    app_health_path: Annotated[str, AfterValidator(_check_path)] = Field(
        "/healthz", description="health path of an http app"
    )
    app_model: Annotated[OptionalStr, AfterValidator(_check_model)] = Field(
        None, description="model name at an oip-http/oip-grpc app (default: the service name)"
    )
    app_encoding: Annotated[AppEncoding, BeforeValidator(_lower)] = Field(
        "auto",
        description="tensors to an oip-http app: binary extension, json, or auto (binary"
        " if the server lists binary_tensor_data)",
    )
    log_level: Annotated[LogLevel, BeforeValidator(_lower)] = Field(
        "info", description="least severe log level written"
    )
    log_format: Annotated[LogFormat, BeforeValidator(_lower)] = Field(
        "json", description="log lines as JSON objects or as text"
    )
    max_message_size: int = Field(_DEFAULTS.max_message_size, gt=0, description="bytes")
    max_header_size: int = Field(_DEFAULTS.max_header_size, ge=4096, description="bytes")
    max_tensors: int = Field(_DEFAULTS.max_tensors, gt=0, description="tensors per message")
    max_rank: int = Field(_DEFAULTS.max_rank, gt=0, description="dimensions per tensor")
    inline_threshold: int = Field(
        _DEFAULTS.inline_threshold, ge=0, description="bytes below which tensors go inline"
    )
    chunk_size: int = Field(_DEFAULTS.chunk_size, gt=0, description="bytes per network chunk")
    max_concurrent_streams: int = Field(
        _DEFAULTS.max_concurrent_streams, gt=0, description="streams per link"
    )
    shm_arena_size: int = Field(64 << 20, ge=1 << 20, description="bytes per shared-memory arena")
    shm_max_bytes: int = Field(4 << 30, ge=1 << 20, description="shared-memory bytes in all")
    shm_lease_timeout: Seconds = Field(300.0, description="seconds before a lease is reclaimed")
    shm_reap_interval: Seconds = Field(1.0, description="seconds between reaper passes")
    balancer: Annotated[BalancerName, BeforeValidator(_lower)] = Field(
        "peak_ewma", description="how requests are spread among a service's endpoints"
    )
    max_attempts: int = Field(3, ge=1, le=10, description="tries per request, the first included")
    retry_budget_ratio: float = Field(
        0.2, ge=0.0, le=1.0, description="retries allowed as a fraction of recent requests"
    )
    queue_limit: int = Field(
        0,
        ge=0,
        description="requests to the app at once before shedding (0: no limit; the fronted"
        " service's `services` entry wins)",
    )
    hedge: bool = Field(
        False, description="send a second try to another endpoint after the p95 latency"
    )
    eject_after: int = Field(
        5, ge=0, description="failures in a row that eject an endpoint (0: never)"
    )
    max_ejected: float = Field(
        0.5, ge=0.0, le=1.0, description="most of a cluster that may be ejected at once"
    )
    tls_cert: OptionalStr = Field(
        None,
        description="PEM certificate chain of this sidecar: mutual TLS on the mesh listener"
        " and on links to peers (with --tls-key and --tls-ca)",
    )
    tls_key: OptionalStr = Field(None, description="PEM private key of --tls-cert")
    tls_ca: OptionalStr = Field(
        None, description="PEM bundle of the CAs peers' certificates must chain to"
    )
    trust_domain: Annotated[str, AfterValidator(_check_trust_domain)] = Field(
        DEFAULT_TRUST_DOMAIN,
        description="SPIFFE trust domain of identities: spiffe://DOMAIN/service/NAME",
    )
    local_mesh_addr: Annotated[OptionalStr, AfterValidator(_check_loopback)] = Field(
        None,
        description="plaintext mesh listener for the local app when TLS is on (loopback only;"
        " its callers are this sidecar's own service)",
    )
    authorization: Annotated[dict[str, list[str]], BeforeValidator(_json_object)] = Field(
        default_factory=dict,
        description="which caller services may call each service: {service: [caller, ...]}"
        " ('*' any verified caller, 'caller:method' one method); needs TLS",
    )
    admin_token: OptionalStr = Field(
        None, description="bearer token the admin listener asks for (not on /healthz, /readyz)"
    )
    services: Annotated[dict[str, ServiceOverrides], BeforeValidator(_json_object)] = Field(
        default_factory=dict,
        description="per-service overrides of balancer, max_attempts, retry_budget_ratio,"
        " hedge, eject_after, max_ejected, queue_limit"
        " (a mapping in YAML, JSON in a flag or variable)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then the sources `build_settings` gives, else `os.environ`."""
        run_sources = _RUN_SOURCES.get()
        if run_sources is not None:
            return (init_settings, *run_sources(settings_cls))
        return init_settings, env_settings, dotenv_settings, file_secret_settings

    @field_validator("app")
    @classmethod
    def _app_fits_protocol(cls, value: str | None, info: ValidationInfo) -> str | None:
        protocol = str(info.data.get("app_protocol"))
        if value is None or protocol not in APP_SCHEMES:
            return value  # a bad app_protocol has its own error
        schemes, example = APP_SCHEMES[protocol]
        if not _is_app_url(value, schemes):
            raise ValueError(
                f"{redact_uri(value)!r} is not a URL of an app speaking {protocol};"
                f" write e.g. {example}"
            )
        return value

    @model_validator(mode="after")
    def _limits_work_together(self) -> Settings:
        self.limits()  # Limits.__post_init__ says what does not fit, as a ValueError
        return self

    @model_validator(mode="after")
    def _tls_settings_work_together(self) -> Settings:
        names = ("tls_cert", "tls_key", "tls_ca")
        given = [f"--{n.replace('_', '-')}" for n in names if getattr(self, n)]
        if given and len(given) != 3:
            raise ValueError(
                f"--tls-cert, --tls-key and --tls-ca go together; only {', '.join(given)} is set"
            )
        if self.authorization and not given:
            raise ValueError(
                "--authorization needs --tls-cert, --tls-key and --tls-ca: callers are known"
                " by their certificates"
            )
        if self.local_mesh_addr and not given:
            raise ValueError("--local-mesh-addr is for TLS setups; without TLS use --mesh-addr")
        for service, callers in self.authorization.items():
            for caller in callers:
                name, _, method = caller.partition(":")
                if not (name == "*" or _NAME.match(name)) or (method and not _NAME.match(method)):
                    raise ValueError(
                        f"--authorization: {caller!r} (for {service!r}) is not CALLER,"
                        " CALLER:METHOD or '*'"
                    )
        return self

    @property
    def tls_on(self) -> bool:
        """True when the mesh listener and peer links use mutual TLS."""
        return self.tls_cert is not None

    def shm_domain(self, shm_dir: str | None = None) -> ShmDomain | None:
        """This process's place in the shared-memory directory (blocking: files, pre-fault).

        None when shared memory is off. Raises OSError if the directory is unusable.
        """
        directory = self.shm_dir if shm_dir is None else shm_dir
        if not directory:
            return None
        return ShmDomain(
            directory,
            arena_size=self.shm_arena_size,
            max_bytes=self.shm_max_bytes,
            lease_timeout=self.shm_lease_timeout,
            reap_interval=self.shm_reap_interval,
        )

    def limits(self) -> Limits:
        """The transport limits these settings describe."""
        return Limits(
            max_message_size=self.max_message_size,
            max_header_size=self.max_header_size,
            max_tensors=self.max_tensors,
            max_rank=self.max_rank,
            inline_threshold=self.inline_threshold,
            chunk_size=self.chunk_size,
            max_concurrent_streams=self.max_concurrent_streams,
        )

    def redacted(self) -> dict[str, object]:
        """Every setting as JSON-ready values, secrets masked (what `/config` shows)."""
        values: dict[str, object] = self.model_dump(mode="json")
        for name in self.SECRET_FIELDS:
            if values.get(name):
                values[name] = MASK
        for name in self.URI_FIELDS:
            if isinstance(uri := values.get(name), str):
                values[name] = redact_uri(uri)
        return values


@contextmanager
def _sources(factory: SourceFactory) -> Iterator[None]:
    token = _RUN_SOURCES.set(factory)
    try:
        yield
    finally:
        _RUN_SOURCES.reset(token)


def build_settings(sources: SourceFactory) -> Settings:
    """Settings from the sources `sources(Settings)` makes, first source winning.

    Raises pydantic.ValidationError naming what is wrong, and whatever the sources raise.
    """
    with _sources(sources):
        return Settings()

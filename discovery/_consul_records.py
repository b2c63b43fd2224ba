"""Pure pieces of the Consul backend: health entries → endpoints, blocking-query index rules,
the watch's rate limit, and the registration body (consul-api.md §2.1, §2.6, §4).

No I/O and no clock: times come in as arguments.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ._endpoint import Endpoint, check_address
from ._errors import RecordError
from ._registry import Snapshot, sorted_endpoints

logger = logging.getLogger(__name__)

CHECK_NOTE = "arrowmesh sidecar"  # constant: an Output change alone is synced late (§3.6)


def check_id(service_id: str) -> str:
    """The CheckID the agent gives a service's lone check (§2.1 defaults)."""
    return f"service:{service_id}"


def go_duration(seconds: float) -> str:
    """A Go duration string the agent accepts (§3.2): whole milliseconds."""
    return f"{max(1, round(seconds * 1000))}ms"


def registration(endpoint: Endpoint, ttl: float, deregister_after: float) -> dict[str, object]:
    """py-consul `agent.service.register` keyword arguments for `endpoint`.

    The TTL check starts critical (the agent's default): the sidecar passes it once its app
    is healthy. `DeregisterCriticalServiceAfter` is not a `Check.ttl()` argument, so the check
    is a plain dict (§5).
    """
    check_address(endpoint.address)
    return {
        "name": endpoint.service,
        "service_id": endpoint.id,
        "address": endpoint.address,
        "port": endpoint.port,
        "tags": ["arrowmesh", endpoint.protocol],
        "meta": endpoint.to_meta(),
        "weights": {"Passing": endpoint.weight, "Warning": 1},
        "check": {
            "TTL": go_duration(ttl),
            "DeregisterCriticalServiceAfter": go_duration(deregister_after),
            "Notes": CHECK_NOTE,
        },
    }


def endpoints_from_health(service: str, entries: object) -> Snapshot:
    """The passing endpoints in a `/v1/health/service/<service>?passing` answer.

    Raises RecordError if the answer is not a list; skips (and counts) entries that are
    malformed, belong to another service, or have a check that is not passing.
    """
    if not isinstance(entries, list):
        raise RecordError(f"health answer for {service!r} is {type(entries).__name__}, not a list")
    endpoints: list[Endpoint] = []
    rejected = 0
    for entry in entries:
        try:
            endpoint = _endpoint_of(service, entry)
        except RecordError as exc:
            rejected += 1
            logger.warning("consul entry skipped", extra={"service": service, "error": str(exc)})
            continue
        if endpoint is not None:
            endpoints.append(endpoint)
    return Snapshot(sorted_endpoints(endpoints), rejected)


def _endpoint_of(service: str, entry: object) -> Endpoint | None:
    node = _object(entry, "Node", "entry")
    svc = _object(entry, "Service", "entry")
    checks = entry.get("Checks", []) if isinstance(entry, dict) else None
    if not isinstance(checks, list):
        raise RecordError("entry Checks is not a list")
    if svc.get("Service") != service:
        raise RecordError(f"entry is for service {svc.get('Service')!r}, not {service!r}")
    # `?passing` already filters; a check that is not passing here means a confused answer.
    if any(not isinstance(c, dict) or c.get("Status") != "passing" for c in checks):
        return None
    address = svc.get("Address") or node.get("Address")  # "" means the node's (§2.6)
    port, sid, meta = svc.get("Port"), svc.get("ID"), svc.get("Meta") or {}
    if not isinstance(address, str) or not isinstance(sid, str):
        raise RecordError(f"entry {sid!r} has no usable ID or address")
    if not isinstance(port, int) or isinstance(port, bool):
        raise RecordError(f"entry {sid!r} port {port!r} is not an integer")
    if not isinstance(meta, dict):
        raise RecordError(f"entry {sid!r} Meta is not an object")
    return Endpoint.from_record(service, sid, check_address(address), port, meta)


def _object(entry: object, key: str, what: str) -> dict[str, object]:
    value = entry.get(key) if isinstance(entry, dict) else None
    if not isinstance(value, dict):
        raise RecordError(f"{what} has no {key} object")
    return value


def next_index(previous: int, received: int) -> int:
    """The index to block on next (§4): back to 0 (one immediate read) when the index went
    backwards, and never below 1 otherwise, so 0 cannot cause a busy loop."""
    if received < previous:
        return 0
    return max(received, 1)


def parse_index(header: object) -> int:
    """X-Consul-Index as py-consul returns it (a string); RecordError if it is not one."""
    try:
        value = int(str(header))
    except ValueError:
        raise RecordError(f"X-Consul-Index {header!r} is not an integer") from None
    if value < 0:
        raise RecordError(f"X-Consul-Index {value} is negative")
    return value


@dataclass(slots=True)
class TokenBucket:
    """Limits how often a watch may ask (§4: rate-limit rather than sleep).

    A blocking query that waits costs nothing here; only answers that come back at once
    (churn, or an index reset) drain the bucket. `rate` is tokens per second.
    """

    burst: float = 2.0
    rate: float = 1.0
    _tokens: float = field(default=-1.0)
    _at: float = 0.0

    def delay(self, now: float) -> float:
        """Seconds to wait before the next call, taking its token."""
        if self._tokens < 0:
            self._tokens, self._at = self.burst, now
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


def backoff(attempt: int, rng_value: float, base: float = 0.2, cap: float = 5.0) -> float:
    """Full-jitter exponential back-off: `rng_value` in [0, 1) comes from the caller's rng."""
    return rng_value * min(cap, base * 2.0 ** min(attempt, 16))

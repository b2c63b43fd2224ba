"""Validation of a decoded registration, in the order `AgentRegisterService` runs it.

consul-api.md §2.1: the 400s (`Missing service name`, `Invalid service address`,
`Invalid Weights: …`, `Invalid Service Meta: …`, `Invalid check: …`, the status text) and the
500s `Agent.AddService` returns after accepting a request (tagged address families, script
checks, which a -dev agent refuses from the HTTP API).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Final

from ._definition import STATUSES, CheckType, ServiceDefinition, Weights
from ._errors import ApiError

_META_KEY: Final = re.compile("[A-Za-z0-9_-]+")


def check_identity(definition: ServiceDefinition) -> None:
    """The checks made before the ACL token is resolved: name, then address."""
    if not definition.name:
        raise ApiError(400, "Missing service name")
    if definition.address in ("0.0.0.0", "::", "[::]"):  # ipaddr.IsAny
        raise ApiError(400, "Invalid service address")


def check_definition(definition: ServiceDefinition) -> list[CheckType]:
    """Weights, Meta, then each check; returns the checks to register, in order."""
    if definition.weights is not None:
        _check_weights(definition.weights)
    if definition.meta:
        _check_meta(definition.meta)
    checks: list[CheckType] = []
    for check in definition.checks:
        if check is None:
            # Go dereferences the nil *CheckType and the handler panics; net/http answers 500.
            raise ApiError(500, "runtime error: invalid memory address or nil pointer dereference")
        problem = check.problem()
        if problem is not None:
            raise ApiError(400, f"Invalid check: {problem}")
        checks.append(check)
    for check in checks:
        if check.status and check.status not in STATUSES:
            raise ApiError(400, "Status for checks must 'passing', 'warning', 'critical'")
    return checks


def _check_weights(weights: Weights) -> None:
    problem = None
    if weights.passing < 1:
        problem = "Passing must be greater than 0"
    elif weights.warning < 0:
        problem = "Warning must be greater or equal than 0"
    elif weights.passing > 65535 or weights.warning > 65535:
        problem = "DNS Weight must be between 0 and 65535"
    if problem:
        raise ApiError(400, f"Invalid Weights: {problem}")


def _check_meta(meta: Mapping[str, str]) -> None:
    if len(meta) > 64:
        raise ApiError(
            400, "Invalid Service Meta: Node metadata cannot contain more than 64 key/value pairs"
        )
    for key in sorted(meta):  # Go's map order is random; sorted is one of its orders
        problem = _meta_problem(key, meta[key])
        if problem:
            pair = f"('{key}', '{meta[key]}')"
            raise ApiError(
                400, f"Invalid Service Meta: Couldn't load metadata pair {pair}: {problem}"
            )


def _meta_problem(key: str, value: str) -> str | None:
    if not key:
        return "Key cannot be blank"
    if not _META_KEY.fullmatch(key):
        return "Key contains invalid characters"
    if len(key) > 128:
        return "Key is too long (limit: 128 characters)"
    if key.startswith("consul-"):
        return "Key prefix 'consul-' is reserved for internal use"
    if len(value.encode()) > 512:
        return "Value is too long (limit: 512 characters)"
    return None


def check_addable(definition: ServiceDefinition, checks: list[CheckType]) -> None:
    """The 500s `Agent.AddService` returns after the request was accepted as valid."""
    for key, want_v4 in (("lan_ipv4", True), ("wan_ipv4", True), ("lan_ipv6", False)):
        # wan_ipv6 is never checked: the agent tests lan_ipv6 twice (agent.validateService).
        entry = definition.tagged_addresses.get(key)
        if entry is not None and ip_version(entry.address) != (4 if want_v4 else 6):
            family = "ipv4" if want_v4 else "ipv6"
            raise ApiError(500, f'Service tagged address "{key}" must be a valid {family} address')
    if any(check.script_args for check in checks):
        raise ApiError(
            500,
            "Scripts are disabled on this agent from remote calls; "
            "to enable, configure 'enable_script_checks' to true",
        )


def ip_version(text: str) -> int | None:
    """4 or 6 as Go's `net.ParseIP(...).To4()` sees it, None if not an IP."""
    if "%" in text:  # Go's ParseIP takes no zone
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return 4
    return ip.version

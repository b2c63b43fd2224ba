"""JSON shapes of the agent's answers (consul-api.md §2.3, §2.5-§2.8).

Keys follow the Go structs' field order (`api.AgentService`, `structs.HealthCheck`,
`structs.CheckServiceNode`, `structs.ServiceNode`). Lists the agent turns from nil into `[]`
are `[]`; a service registered without `Meta` shows `{}` on /v1/agent/* but `null` in health
and catalog reads, as the agent passes the nil map through.
"""

from __future__ import annotations

import hashlib

from ._definition import CheckType, ServiceAddress
from ._duration import format_duration
from ._gojson import encode
from ._records import Check, Service
from ._state import DATACENTER, VERSION, AgentState

JsonObject = dict[str, object]


def agent_service(service: Service, *, with_hash: bool = False) -> JsonObject:
    """A value of `GET /v1/agent/services` (or `/agent/service/:id` with its ContentHash)."""
    out: JsonObject = {"Kind": service.kind} if service.kind else {}
    out |= {
        "ID": service.id,
        "Service": service.name,
        "Tags": list(service.tags),
        "Meta": dict(service.meta or {}),
        "Port": service.port,
        "Address": service.address,
    }
    if service.socket_path:
        out["SocketPath"] = service.socket_path
    if service.tagged_addresses:
        out["TaggedAddresses"] = _tagged(service.tagged_addresses)
    out["Weights"] = _weights(service)
    out["EnableTagOverride"] = service.enable_tag_override
    if with_hash:
        out["ContentHash"] = hashlib.blake2b(encode(out), digest_size=8).hexdigest()
    out["Datacenter"] = DATACENTER
    return out


def agent_check(check: Check, node: str) -> JsonObject:
    """A value of `GET /v1/agent/checks`: the live status and output, no raft indexes."""
    return _check(check, node, check.status, check.output, indexes=(0, 0))


def catalog_check(check: Check, node: str) -> JsonObject:
    """A check as health reads show it: the synced status and output (§3.6)."""
    indexes = (check.create_index, check.modify_index)
    return _check(check, node, check.synced_status, check.synced_output, indexes=indexes)


def _check(
    check: Check, node: str, status: str, output: str, indexes: tuple[int, int]
) -> JsonObject:
    spec = check.definition
    return {
        "Node": node,
        "CheckID": check.id,
        "Name": check.name,
        "Status": status,
        "Notes": spec.notes,
        "Output": output,
        "ServiceID": check.service_id,
        "ServiceName": check.service_name,
        "ServiceTags": list(check.service_tags),
        "Type": check.type,
        "Interval": format_duration(spec.interval) if spec.interval else "",
        "Timeout": format_duration(spec.timeout) if spec.timeout else "",
        "ExposedPort": 0,
        "Definition": _check_definition(spec),
        "CreateIndex": indexes[0],
        "ModifyIndex": indexes[1],
    }


def _check_definition(spec: CheckType) -> JsonObject:
    fields: list[tuple[str, object]] = [
        ("HTTP", spec.http),
        ("TLSServerName", spec.tls_server_name),
        ("TLSSkipVerify", spec.tls_skip_verify),
        ("Header", {name: list(values) for name, values in spec.header}),
        ("Method", spec.method),
        ("Body", spec.body),
        ("DisableRedirects", spec.disable_redirects),
        ("TCP", spec.tcp),
        ("GRPC", spec.grpc),
        ("GRPCUseTLS", spec.grpc_use_tls),
        ("Interval", format_duration(spec.interval) if spec.interval else ""),
        ("Timeout", format_duration(spec.timeout) if spec.timeout else ""),
        (
            "DeregisterCriticalServiceAfter",
            format_duration(spec.deregister_after) if spec.deregister_after else "",
        ),
    ]
    return {name: value for name, value in fields if value}


def node(state: AgentState) -> JsonObject:
    """The agent's node as health entries embed it."""
    return {
        "ID": state.node_id,
        "Node": state.node,
        "Address": state.address,
        "Datacenter": DATACENTER,
        "TaggedAddresses": _node_addresses(state),
        "Meta": _node_meta(),
        "CreateIndex": state.node_index,
        "ModifyIndex": state.node_index,
    }


def health_entry(state: AgentState, service: Service) -> JsonObject:
    """One element of `GET /v1/health/service/:service` (§2.6): node checks first."""
    checks = [state.serf_check, *state.checks_of(service.id)]
    return {
        "Node": node(state),
        "Service": _node_service(service),
        "Checks": [catalog_check(check, state.node) for check in checks],
    }


def _node_service(service: Service) -> JsonObject:
    out: JsonObject = {"Kind": service.kind} if service.kind else {}
    out |= {
        "ID": service.id,
        "Service": service.name,
        "Tags": list(service.tags),
        "Address": service.address,
    }
    if service.tagged_addresses:
        out["TaggedAddresses"] = _tagged(service.tagged_addresses)
    out |= {"Meta": None if service.meta is None else dict(service.meta), "Port": service.port}
    if service.socket_path:
        out["SocketPath"] = service.socket_path
    out |= {
        "Weights": _weights(service),
        "EnableTagOverride": service.enable_tag_override,
        "Proxy": _empty_proxy(),
        "Connect": {},
        "CreateIndex": service.create_index,
        "ModifyIndex": service.modify_index,
    }
    return out


def catalog_entry(state: AgentState, service: Service) -> JsonObject:
    """One element of `GET /v1/catalog/service/:service` (§2.7)."""
    out: JsonObject = {
        "ID": state.node_id,
        "Node": state.node,
        "Address": state.address,
        "Datacenter": DATACENTER,
        "TaggedAddresses": _node_addresses(state),
        "NodeMeta": _node_meta(),
        "ServiceKind": service.kind,
        "ServiceID": service.id,
        "ServiceName": service.name,
        "ServiceTags": list(service.tags),
        "ServiceAddress": service.address,
    }
    if service.tagged_addresses:
        out["ServiceTaggedAddresses"] = _tagged(service.tagged_addresses)
    out |= {
        "ServiceWeights": _weights(service),
        "ServiceMeta": None if service.meta is None else dict(service.meta),
        "ServicePort": service.port,
    }
    if service.socket_path:
        out["ServiceSocketPath"] = service.socket_path
    out |= {
        "ServiceEnableTagOverride": service.enable_tag_override,
        "ServiceProxy": _empty_proxy(),
        "ServiceConnect": {},
        "CreateIndex": service.create_index,
        "ModifyIndex": service.modify_index,
    }
    return out


def agent_self(state: AgentState) -> JsonObject:
    """`GET /v1/agent/self`: at least what clients read (§2.8)."""
    return {
        "Config": {
            "Datacenter": DATACENTER,
            "PrimaryDatacenter": DATACENTER,
            "NodeName": state.node,
            "NodeID": state.node_id,
            "Revision": "arrowmesh-emulator",
            "Server": True,
            "Version": VERSION,
            "BuildDate": "2024-01-01T00:00:00Z",
        },
        "DebugConfig": {"DevMode": True, "Datacenter": DATACENTER, "NodeName": state.node},
        "Coord": {"Vec": [0.0] * 8, "Error": 1.5, "Adjustment": 0.0, "Height": 1e-05},
        "Member": {
            "Name": state.node,
            "Addr": state.address,
            "Port": 8301,
            "Tags": {"dc": DATACENTER, "role": "consul", "vsn": "2", "build": VERSION},
            "Status": 1,
            "ProtocolMin": 1,
            "ProtocolMax": 5,
            "ProtocolCur": 2,
            "DelegateMin": 2,
            "DelegateMax": 5,
            "DelegateCur": 4,
        },
        "Stats": {
            "agent": {"services": str(len(state.services)), "checks": str(len(state.checks))},
            "consul": {"leader": "true", "server": "true", "known_datacenters": "1"},
        },
        "Meta": _node_meta(),
    }


def leader(state: AgentState) -> str:
    """`GET /v1/status/leader`: the server's RPC address."""
    return f"{state.address}:8300"


def _weights(service: Service) -> JsonObject:
    passing = service.weights.passing if service.weights.passing > 0 else 1
    return {"Passing": passing, "Warning": service.weights.warning}


def _tagged(addresses: dict[str, ServiceAddress]) -> JsonObject:
    return {key: {"Address": a.address, "Port": a.port} for key, a in sorted(addresses.items())}


def _node_addresses(state: AgentState) -> JsonObject:
    address = state.address
    return {"lan": address, "lan_ipv4": address, "wan": address, "wan_ipv4": address}


def _node_meta() -> JsonObject:
    return {"consul-network-segment": "", "consul-version": VERSION}


def _empty_proxy() -> JsonObject:
    return {"Mode": "", "MeshGateway": {}, "Expose": {}}

"""The records the agent keeps: service instances and checks (consul-api.md §2).

A `Check` carries both views of its state (the agent's live one and the catalog's synced one,
§3.6) and its timers as absolute times on the caller's clock; `AgentState` maintains them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._definition import CheckType, ServiceAddress, Weights


@dataclass(slots=True)
class Service:
    """A registered service instance (`structs.NodeService`)."""

    id: str
    name: str
    tags: list[str] = field(default_factory=list)
    address: str = ""
    port: int = 0
    meta: dict[str, str] | None = None  # None: registered without Meta (catalog shows null)
    weights: Weights = field(default_factory=Weights)
    tagged_addresses: dict[str, ServiceAddress] = field(default_factory=dict)
    enable_tag_override: bool = False
    kind: str = ""
    socket_path: str = ""
    create_index: int = 0
    modify_index: int = 0

    def content(self) -> tuple[object, ...]:
        """Everything a write compares (`NodeService.IsSame`), indexes excluded."""
        return (
            self.name,
            self.tags,
            self.address,
            self.port,
            self.meta,
            self.weights,
            self.tagged_addresses,
            self.enable_tag_override,
            self.kind,
            self.socket_path,
        )


@dataclass(slots=True)
class Check:
    """A health check with its agent view, catalog view and timers."""

    id: str
    name: str
    definition: CheckType
    status: str
    output: str = ""
    service_id: str = ""
    service_name: str = ""
    service_tags: list[str] = field(default_factory=list)
    synced_status: str = ""
    synced_output: str = ""
    create_index: int = 0
    modify_index: int = 0
    critical_since: float | None = None
    ttl_deadline: float | None = None
    ttl_state_expires: float | None = None  # what a data-dir agent would persist (§3.7)
    last_ttl_output: str = ""
    sync_deadline: float | None = None
    reap_after: float | None = None
    successes: int = 0
    failures: int = 0
    generation: int = 0

    @property
    def type(self) -> str:
        return self.definition.kind

    def agent_content(self) -> tuple[object, ...]:
        return (*self._shape(), self.status, self.output)

    def catalog_content(self) -> tuple[object, ...]:
        return (*self._shape(), self.synced_status, self.synced_output)

    def _shape(self) -> tuple[object, ...]:
        return (self.name, self.definition, self.service_id, self.service_name, self.service_tags)

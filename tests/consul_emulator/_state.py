"""The agent's services and checks, and the catalog they sync to (consul-api.md §2-§4).

A sans-IO core: it reads no clock and starts nothing. Callers pass `now` (seconds on one
monotonic clock), call `tick(now)` at `next_deadline()`, `reap(now)` every reap interval, and
feed probe results to `record_probe`.

Invariants:
- A check has two views. The agent's (`status`, `output`) is what /v1/agent/checks shows at
  once; the catalog's (`synced_status`, `synced_output`) is what health and catalog reads show.
  A status change syncs at once; an output-only change waits half `check_update_interval` plus
  up to one more (§3.6, `local.State.UpdateCheck`), so a same-status refresh moves no index.
- `index` is the catalog's raft index: one step per write that changes what the catalog shows,
  stamped on everything that write touched as `modify_index` (§4).
- `critical_since` starts when an update turns a check critical, not at registration
  (`local.CheckState.CriticalTime`); the reaper's clock is that one (§3.4).
- A check's `generation` changes whenever it is (re-)registered or the agent restarts; probe
  results carry the generation they ran for, and stale ones are dropped.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from typing import Final

from ._definition import CheckType, ServiceAddress, ServiceDefinition, Weights
from ._duration import SECOND
from ._records import Check, Service
from ._validation import ip_version

VERSION: Final = "1.18.2"
DATACENTER: Final = "dc1"
OUTPUT_MAX: Final = 4096  # checks.DefaultBufSize (§2.4: "Output is cut at 4 KiB")
_BOOT_INDEX: Final = 10  # a fresh -dev agent's first writes land at small indexes (§3.7)


class NotTTLCheck(LookupError):
    """`update_ttl` on a check that has no TTL (the agent answers 500, §2.4)."""


class AgentState:
    """One agent (a -dev server) and its catalog."""

    def __init__(
        self,
        *,
        node: str,
        address: str,
        min_deregister_after: float,
        check_update_interval: float,
        rng: random.Random,
    ) -> None:
        self.node = node
        self.address = address
        self._min_reap_after = min_deregister_after
        self._update_interval = check_update_interval
        self._rng = rng
        self.services: dict[str, Service] = {}
        self.checks: dict[str, Check] = {}
        self._touched: list[Service | Check] = []
        self._removed = False
        self._generation = 0
        self._boot()

    def _boot(self) -> None:
        """A fresh agent: the node, its serfHealth check and the `consul` service (§2.6, §2.7)."""
        self.services.clear()
        self.checks.clear()
        self.node_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        self.node_index = _BOOT_INDEX
        self.consul_service = Service(
            "consul",
            "consul",
            port=8300,
            meta={"raft_version": "3", "serf_protocol_current": "2", "version": VERSION},
            create_index=_BOOT_INDEX + 1,
            modify_index=_BOOT_INDEX + 1,
        )
        self.serf_check = Check(
            "serfHealth",
            "Serf Health Status",
            CheckType(),
            "passing",
            "Agent alive and reachable",
            synced_status="passing",
            synced_output="Agent alive and reachable",
            create_index=_BOOT_INDEX + 2,
            modify_index=_BOOT_INDEX + 2,
        )
        self._index = _BOOT_INDEX + 2

    @property
    def index(self) -> int:
        """The catalog's current raft index (always >= 1)."""
        return self._index

    # -- writes ---------------------------------------------------------------------------

    def register(
        self,
        definition: ServiceDefinition,
        check_types: Sequence[CheckType],
        *,
        replace_existing_checks: bool,
        now: float,
    ) -> None:
        """`PUT /v1/agent/service/register` once validated (§2.1)."""
        service = _service_from(definition)
        old = self.services.get(service.id)
        if old is not None:
            service.create_index, service.modify_index = old.create_index, old.modify_index
        if old is None or old.content() != service.content():
            self._touched.append(service)
        self.services[service.id] = service
        before = {c.id for c in self.checks.values() if c.service_id == service.id}
        kept = set()
        for number, check_type in enumerate(check_types, start=1):
            check_id = check_type.check_id or f"service:{service.id}"
            if not check_type.check_id and len(check_types) > 1:
                check_id += f":{number}"
            self._add_check(check_id, check_type, service, now)
            kept.add(check_id)
        if replace_existing_checks:
            for check_id in before - kept:
                self._drop_check(check_id)
        self._commit()

    def _add_check(self, check_id: str, spec: CheckType, service: Service, now: float) -> None:
        prev = self.checks.get(check_id)
        self._generation += 1
        check = Check(
            check_id,
            spec.name or f"Service '{service.name}' check",
            spec,
            spec.status or "critical",
            service_id=service.id,
            service_name=service.name,
            service_tags=list(service.tags),
            successes=spec.success_before_passing,  # checks.NewStatusHandler: first result
            failures=spec.failures_before_critical,  # counts at once
            generation=self._generation,
        )
        if spec.ttl > 0:
            check.ttl_deadline = now + spec.ttl / SECOND
        if spec.deregister_after > 0:
            check.reap_after = max(spec.deregister_after / SECOND, self._min_reap_after)
        if prev is None:
            check.synced_status, check.synced_output = check.status, check.output
            self._touched.append(check)
        else:
            self._inherit(check, prev)
        self.checks[check_id] = check

    def _inherit(self, check: Check, prev: Check) -> None:
        """A re-registered CheckID keeps its Status and Output (§2.1)."""
        check.status, check.output = prev.status, prev.output
        check.create_index, check.modify_index = prev.create_index, prev.modify_index
        check.ttl_state_expires, check.last_ttl_output = (
            prev.ttl_state_expires,
            prev.last_ttl_output,
        )
        if check.agent_content() == prev.agent_content():
            # Same definition, same state: the agent thinks it is in sync, nothing is written.
            check.synced_status, check.synced_output = prev.synced_status, prev.synced_output
            check.sync_deadline = prev.sync_deadline
            return
        check.synced_status, check.synced_output = check.status, check.output
        if check.catalog_content() != prev.catalog_content():
            self._touched.append(check)

    def deregister(self, service_id: str) -> bool:
        """`PUT /v1/agent/service/deregister/:id`: the service and its checks (§2.2)."""
        if service_id not in self.services:
            return False
        self._drop_service(service_id)
        self._commit()
        return True

    def update_ttl(self, check_id: str, status: str, output: str, now: float) -> None:
        """`check/pass|warn|fail|update` (§2.4); raises `KeyError`, `NotTTLCheck`."""
        check = self.checks[check_id]
        spec = check.definition
        if spec.ttl <= 0:
            raise NotTTLCheck(check_id)
        limit = min(OUTPUT_MAX, spec.output_max_size) if spec.output_max_size > 0 else OUTPUT_MAX
        output = truncate_output(output, limit)
        check.last_ttl_output = output
        check.ttl_deadline = check.ttl_state_expires = now + spec.ttl / SECOND
        self._update(check, status, output, now)
        self._commit()

    def record_probe(
        self, check_id: str, generation: int, status: str, output: str, now: float
    ) -> None:
        """A probe's verdict through the status handler's thresholds (§2.1)."""
        check = self.checks.get(check_id)
        if check is None or check.generation != generation:
            return
        spec = check.definition
        if status in ("passing", "warning"):
            check.successes, check.failures = check.successes + 1, 0
            if check.successes >= spec.success_before_passing:
                self._update(check, status, output, now)
        else:
            check.successes, check.failures = 0, check.failures + 1
            before_warning = spec.failures_before_warning or spec.failures_before_critical
            if check.failures >= spec.failures_before_critical:
                self._update(check, "critical", output, now)
            elif check.failures >= before_warning:
                self._update(check, "warning", output, now)
        self._commit()

    def tick(self, now: float) -> None:
        """Expire TTLs (§3.3) and sync outputs whose deferral ended (§3.6)."""
        for check in list(self.checks.values()):
            if check.ttl_deadline is not None and check.ttl_deadline <= now:
                check.ttl_deadline = None
                self._update(check, "critical", _expired_output(check.last_ttl_output), now)
            if check.sync_deadline is not None and check.sync_deadline <= now:
                self._sync_now(check)
        self._commit()

    def next_deadline(self) -> float | None:
        """When `tick` has work next, if ever."""
        times = [
            t
            for check in self.checks.values()
            for t in (check.ttl_deadline, check.sync_deadline)
            if t is not None
        ]
        return min(times, default=None)

    def reap(self, now: float) -> list[str]:
        """Remove services with a check critical longer than its reap time (§3.4)."""
        reaped: list[str] = []
        for check in list(self.checks.values()):
            if check.service_id not in self.services or check.reap_after is None:
                continue
            if check.critical_since is not None and now - check.critical_since > check.reap_after:
                reaped.append(check.service_id)
                self._drop_service(check.service_id)
        self._commit()
        return reaped

    def restart(self, now: float, *, forget: bool) -> None:
        """An agent restart: a -dev agent forgets all (§3.7); one with a data-dir keeps its
        registrations and the TTL states that have not expired, and re-runs its checks."""
        if forget:
            self._boot()
            return
        for check in self.checks.values():
            self._resume(check, now)
        self._commit()

    def _resume(self, check: Check, now: float) -> None:
        spec = check.definition
        expires = check.ttl_state_expires
        if not (spec.ttl > 0 and expires is not None and now < expires):
            check.status, check.output = spec.status or "critical", ""
        check.critical_since = None
        check.ttl_deadline = now + spec.ttl / SECOND if spec.ttl > 0 else None
        check.successes, check.failures = spec.success_before_passing, spec.failures_before_critical
        self._generation += 1
        check.generation = self._generation
        self._sync_now(check)  # the first anti-entropy run pushes the local state

    # -- the agent's UpdateCheck and the catalog writes -------------------------------------

    def _update(self, check: Check, status: str, output: str, now: float) -> None:
        if status == "critical":
            if check.critical_since is None:
                check.critical_since = now
        else:
            check.critical_since = None
        if check.status == status and check.output == output:
            return
        if check.status == status and self._update_interval > 0:
            check.output = output
            if check.sync_deadline is None:
                half = self._update_interval / 2
                check.sync_deadline = now + half + self._rng.random() * self._update_interval
            return
        check.status, check.output = status, output
        self._sync_now(check)

    def _sync_now(self, check: Check) -> None:
        before = check.catalog_content()
        check.synced_status, check.synced_output = check.status, check.output
        check.sync_deadline = None
        if check.catalog_content() != before:
            self._touched.append(check)

    def _drop_check(self, check_id: str) -> None:
        del self.checks[check_id]
        self._removed = True

    def _drop_service(self, service_id: str) -> None:
        del self.services[service_id]
        for check_id in [c.id for c in self.checks.values() if c.service_id == service_id]:
            self._drop_check(check_id)
        self._removed = True

    def _commit(self) -> None:
        """One catalog write: one index step for everything changed since the last one."""
        if not self._touched and not self._removed:
            return
        self._index += 1
        for entity in self._touched:
            if entity.create_index == 0:
                entity.create_index = self._index
            entity.modify_index = self._index
        self._touched.clear()
        self._removed = False

    # -- reads ----------------------------------------------------------------------------

    def instances(self, name: str) -> list[Service]:
        """The catalog's instances of a service; names match case-insensitively (memdb)."""
        wanted = name.lower()
        found = [s for s in self.services.values() if s.name.lower() == wanted]
        if self.consul_service.name.lower() == wanted:
            found.append(self.consul_service)
        return sorted(found, key=lambda s: s.id)

    def passing(self, service: Service) -> bool:
        """Every check of the instance, node checks included, passing in the catalog (§2.6)."""
        checks = [self.serf_check, *self.checks_of(service.id)]
        return all(check.synced_status == "passing" for check in checks)

    def checks_of(self, service_id: str) -> list[Check]:
        return sorted(
            (c for c in self.checks.values() if c.service_id == service_id), key=lambda c: c.id
        )

    def catalog_services(self) -> dict[str, list[str]]:
        """Service name to the union of its instances' tags (§2.7)."""
        tags: dict[str, set[str]] = {self.consul_service.name: set()}
        for service in self.services.values():
            tags.setdefault(service.name, set()).update(service.tags)
        return {name: sorted(tags[name]) for name in sorted(tags)}

    def probe_checks(self) -> list[Check]:
        """Checks the agent runs itself (HTTP, TCP, gRPC)."""
        return [c for c in self.checks.values() if c.type in ("http", "tcp", "grpc")]


def truncate_output(output: str, limit: int) -> str:
    """`CheckTTL.SetStatus`: the first `limit` bytes and a note of how much there was."""
    data = output.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return output
    head = data[:limit].decode("utf-8", errors="replace")
    return f"{head} ... (captured {limit} of {len(data)} bytes)"


def _expired_output(last: str) -> str:
    if not last:
        return "TTL expired"
    return f"TTL expired (last output before timeout follows): {last}"


def _service_from(definition: ServiceDefinition) -> Service:
    service = Service(
        definition.id or definition.name,
        definition.name,
        tags=list(definition.tags or ()),
        address=definition.address,
        port=definition.port,
        meta=None if definition.meta is None else dict(definition.meta),
        weights=definition.weights or Weights(),
        tagged_addresses=dict(definition.tagged_addresses),
        enable_tag_override=definition.enable_tag_override,
        kind=definition.kind,
        socket_path=definition.socket_path,
    )
    # An IP Address adds lan_/wan_ tagged addresses unless given (§2.1, addServiceInternal).
    version = ip_version(service.address)
    if version is not None:
        own = ServiceAddress(service.address, service.port)
        for key in (f"lan_ipv{version}", f"wan_ipv{version}"):
            service.tagged_addresses.setdefault(key, own)
    return service

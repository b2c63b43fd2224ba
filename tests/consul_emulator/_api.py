"""One handler per endpoint of consul-api.md §2, over the agent runtime.

Each handler runs the agent's steps in the agent's order (decode, validate, resolve the token,
check permissions, act), so the first failing step decides the error, as on a real agent.
"""

from __future__ import annotations

import random

from aiohttp import web

from . import _views as views
from ._acl import Acl, Authorizer
from ._definition import decode_check_update, decode_registration
from ._errors import ApiError
from ._mux import Call, Route, ok
from ._query import Query, ReadOptions, first, parse_go_bool, parse_read_options, parse_wait
from ._records import Service
from ._runtime import AgentRuntime
from ._state import DATACENTER, NotTTLCheck
from ._validation import check_addable, check_definition, check_identity


class Api:
    """The agent's HTTP API over one `AgentRuntime`."""

    def __init__(
        self, runtime: AgentRuntime, acl: Acl, *, wait_jitter: bool, rng: random.Random
    ) -> None:
        self._runtime = runtime
        self._acl = acl
        self._jitter = rng if wait_jitter else None

    def routes(self) -> list[Route]:
        """The endpoints, as the agent registers them with its mux."""
        get, put = ("GET",), ("PUT",)
        return [
            Route("/v1/agent/self", get, self.agent_self),
            Route("/v1/agent/services", get, self.agent_services),
            Route("/v1/agent/service/", get, self.agent_service),
            Route("/v1/agent/service/register", put, self.register),
            Route("/v1/agent/service/deregister/", put, self.deregister),
            Route("/v1/agent/checks", get, self.agent_checks),
            Route("/v1/agent/check/pass/", put, self.check_pass),
            Route("/v1/agent/check/warn/", put, self.check_warn),
            Route("/v1/agent/check/fail/", put, self.check_fail),
            Route("/v1/agent/check/update/", put, self.check_update),
            Route("/v1/health/service/", get, self.health_service),
            Route("/v1/catalog/services", get, self.catalog_services),
            Route("/v1/catalog/service/", get, self.catalog_service),
            Route("/v1/status/leader", get, self.status_leader),
        ]

    def _authorize(self, call: Call) -> Authorizer:
        return self._acl.resolve(call.token)

    # -- agent endpoints (no index headers, §3.5) ------------------------------------------

    async def agent_self(self, call: Call) -> web.Response:
        authz = self._authorize(call)
        authz.require("agent:read", self._runtime.state.node)
        return call.json(views.agent_self(self._runtime.state))

    async def agent_services(self, call: Call) -> web.Response:
        authz = self._authorize(call)
        services = self._runtime.state.services if authz.all_rights else {}
        return call.json({sid: views.agent_service(services[sid]) for sid in sorted(services)})

    async def agent_service(self, call: Call) -> web.Response:
        parse_wait(call.query)  # only for its 400s: hash blocking is not emulated (§4)
        authz = self._authorize(call)
        service = self._runtime.state.services.get(call.suffix)
        if service is None:
            raise ApiError(404, f"unknown service ID: {call.suffix}")
        authz.require("service:read", service.name)
        body = views.agent_service(service, with_hash=True)
        return call.json(body, {"X-Consul-ContentHash": str(body["ContentHash"])})

    async def agent_checks(self, call: Call) -> web.Response:
        authz = self._authorize(call)
        state = self._runtime.state
        checks = state.checks if authz.all_rights else {}
        return call.json(
            {cid: views.agent_check(checks[cid], state.node) for cid in sorted(checks)}
        )

    async def register(self, call: Call) -> web.Response:
        state = self._runtime.state
        definition = decode_registration(await call.request.read())
        check_identity(definition)
        authz = self._authorize(call)
        checks = check_definition(definition)
        authz.require("service:write", definition.name)
        existing = state.services.get(definition.id or definition.name)
        if existing is not None and existing.name != definition.name:
            authz.require("service:write", existing.name)
        check_addable(definition, checks)
        replace = call.query.get("replace-existing-checks")
        state.register(
            definition,
            checks,
            replace_existing_checks=replace is not None and replace[0] in ("", "true"),
            now=self._runtime.now(),
        )
        self._runtime.commit()
        return ok()

    async def deregister(self, call: Call) -> web.Response:
        authz = self._authorize(call)
        service = self._runtime.state.services.get(call.suffix)
        if service is None:
            raise ApiError(
                404,
                f"Unknown service ID {_go_quote(call.suffix)}. Ensure that the "
                "service ID is passed, not the service name.",
            )
        authz.require("service:write", service.name)
        self._runtime.state.deregister(service.id)
        self._runtime.commit()
        return ok()

    async def check_pass(self, call: Call) -> web.Response:
        return self._ttl_update(call, "passing", first(call.query, "note"))

    async def check_warn(self, call: Call) -> web.Response:
        return self._ttl_update(call, "warning", first(call.query, "note"))

    async def check_fail(self, call: Call) -> web.Response:
        return self._ttl_update(call, "critical", first(call.query, "note"))

    async def check_update(self, call: Call) -> web.Response:
        status, output = decode_check_update(await call.request.read())
        return self._ttl_update(call, status, output)

    def _ttl_update(self, call: Call, status: str, output: str) -> web.Response:
        authz = self._authorize(call)
        state = self._runtime.state
        check = state.checks.get(call.suffix)
        if check is None:
            raise ApiError(
                404,
                f"Unknown check ID {_go_quote(call.suffix)}. Ensure that the "
                "check ID is passed, not the check name.",
            )
        authz.require("service:write", check.service_name)
        try:
            state.update_ttl(check.id, status, output, self._runtime.now())
        except NotTTLCheck:
            raise ApiError(
                500, f"CheckID {_go_quote(check.id)} does not have associated TTL"
            ) from None
        self._runtime.commit()
        return ok()

    # -- health and catalog reads (blocking, index headers, §4) ------------------------------

    async def health_service(self, call: Call) -> web.Response:
        options = self._read_options(call)
        tags = call.query.get("tag")
        if not call.suffix:
            raise ApiError(400, "Missing service name")
        authz = self._authorize(call)
        await self._block(options)
        state = self._runtime.state
        services = self._instances(call.suffix, tags, authz)
        headers = self._meta(options)
        if _only_passing(call.query, headers):
            services = [s for s in services if state.passing(s)]
        return call.json([views.health_entry(state, s) for s in services], headers)

    async def catalog_services(self, call: Call) -> web.Response:
        options = self._read_options(call)
        authz = self._rpc_authorize(call)
        await self._block(options)
        services = self._runtime.state.catalog_services() if authz.all_rights else {}
        return call.json(services, self._meta(options))

    async def catalog_service(self, call: Call) -> web.Response:
        options = self._read_options(call)
        tags = call.query.get("tag")
        if not call.suffix:
            raise ApiError(400, "Missing service name")
        authz = self._rpc_authorize(call)
        await self._block(options)
        state = self._runtime.state
        entries = [
            views.catalog_entry(state, service)
            for service in self._instances(call.suffix, tags, authz)
        ]
        return call.json(entries, self._meta(options))

    async def status_leader(self, call: Call) -> web.Response:
        return call.json(views.leader(self._runtime.state))

    def _read_options(self, call: Call) -> ReadOptions:
        options = parse_read_options(call.query)
        datacenter = first(call.query, "dc")
        if datacenter and datacenter != DATACENTER:
            raise ApiError(500, "No path to datacenter")
        return options

    def _rpc_authorize(self, call: Call) -> Authorizer:
        """Catalog reads set their (empty) query meta even when the RPC fails."""
        try:
            return self._authorize(call)
        except ApiError as exc:
            exc.headers |= {
                "X-Consul-Index": "1",
                "X-Consul-KnownLeader": "false",
                "X-Consul-LastContact": "0",
            }
            raise

    async def _block(self, options: ReadOptions) -> None:
        if options.min_index > 0:
            await self._runtime.wait_past(options.min_index, options.wait_seconds(self._jitter))

    def _meta(self, options: ReadOptions) -> dict[str, str]:
        return {
            "X-Consul-Index": str(max(self._runtime.state.index, 1)),  # never 0 (§3.5)
            "X-Consul-KnownLeader": "true",
            "X-Consul-LastContact": "0",
            "X-Consul-Effective-Consistency": options.consistency,
            "X-Consul-Query-Backend": "blocking-query",
        }

    def _instances(self, name: str, tags: list[str] | None, authz: Authorizer) -> list[Service]:
        if not authz.all_rights:
            return []  # lists silently omit what the token may not read (§3.8)
        wanted = [tag.lower() for tag in tags or ()]
        return [
            service
            for service in self._runtime.state.instances(name)
            if all(tag in {t.lower() for t in service.tags} for tag in wanted)
        ]


def _only_passing(query: Query, headers: dict[str, str]) -> bool:
    """`?passing` as a Go bool (empty means true); parsed after the query ran, so after any
    blocking wait, and the 400 still carries the query's meta headers (§2.6)."""
    values = query.get("passing")
    if values is None:
        return False
    parsed = True if values[0] == "" else parse_go_bool(values[0])
    if parsed is None:
        raise ApiError(400, "Invalid value for ?passing", headers)
    return parsed


def _go_quote(text: str) -> str:
    """Go's `%q` for printable text: double quotes, backslash escapes."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

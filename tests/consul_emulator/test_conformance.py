"""consul-api.md §6: the checklist the emulator and a real agent must both pass.

Runs against a fresh emulator per test, or against the agent at `CONSUL_HTTP_ADDR` when set.
Each test is one checklist item (`test_NN_...`), uses fresh service names, and asserts only
what consul-api.md states.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import consul.aio
import pytest

from ._client import AgentClient, Reply, eventually


def ttl_service(
    name: str, service_id: str, ttl: object = "10s", **extra: object
) -> dict[str, object]:
    """A registration with one TTL check (lowercase keys, as py-consul sends)."""
    return {"name": name, "id": service_id, "port": 8080, "checks": [{"ttl": ttl}], **extra}


async def check_of(agent: AgentClient, check_id: str) -> dict[str, object]:
    checks = await agent.checks()
    assert check_id in checks, f"{check_id} not in {sorted(checks)}"
    return checks[check_id]


def health_checks(entry: dict[str, object]) -> list[dict[str, object]]:
    checks = entry["Checks"]
    assert isinstance(checks, list)
    return checks


def service_ids(reply: Reply) -> list[str]:
    assert reply.status == 200, reply.text
    ids = []
    for entry in reply.items():
        service = entry["Service"]
        assert isinstance(service, dict)
        ids.append(str(service["ID"]))
    return sorted(ids)


async def test_01_register_with_lowercase_keys(agent: AgentClient, name: str) -> None:
    reply = await agent.register(ttl_service(name, f"{name}-1"))
    assert (reply.status, reply.text) == (200, "")
    services = await agent.services()
    entry = services[f"{name}-1"]
    assert isinstance(entry, dict)
    assert entry["Service"] == name


async def test_02_missing_id_defaults_to_the_name(agent: AgentClient, name: str) -> None:
    assert (await agent.register({"Name": name})).status == 200
    entry = (await agent.services())[name]
    assert isinstance(entry, dict)
    assert entry["ID"] == name


async def test_03_unknown_key_is_a_decode_error(agent: AgentClient, name: str) -> None:
    reply = await agent.register({"Name": name, "Bogus": 1})
    assert reply.status == 400
    assert reply.text.startswith("Request decode failed"), reply.text
    assert name not in await agent.services()


async def test_04_missing_name_and_unspecified_address_are_refused(
    agent: AgentClient, name: str
) -> None:
    reply = await agent.register({"ID": f"{name}-1", "Port": 80})
    assert (reply.status, reply.text) == (400, "Missing service name")
    reply = await agent.register({"Name": name, "Address": "0.0.0.0"})
    assert (reply.status, reply.text) == (400, "Invalid service address")


async def test_05_ttl_needs_a_unit_or_nanoseconds(agent: AgentClient, name: str) -> None:
    reply = await agent.register(ttl_service(name, f"{name}-1", ttl="10"))
    assert reply.status == 400, reply.text
    reply = await agent.register(ttl_service(name, f"{name}-2", ttl=10_000_000_000))
    assert reply.status == 200, reply.text
    check = await check_of(agent, f"service:{name}-2")
    assert check["Type"] == "ttl"


async def test_06_http_without_interval_and_id_in_a_check_are_refused(
    agent: AgentClient, name: str
) -> None:
    reply = await agent.register({"Name": name, "Check": {"HTTP": "http://127.0.0.1:1/"}})
    assert reply.status == 400, reply.text
    reply = await agent.register({"Name": name, "Checks": [{"ID": "x", "TTL": "10s"}]})
    assert reply.status == 400, reply.text
    assert name not in await agent.services()


async def test_07_check_defaults(agent: AgentClient, name: str) -> None:
    assert (await agent.register(ttl_service(name, f"{name}-1"))).status == 200
    check = await check_of(agent, f"service:{name}-1")
    assert check["Name"] == f"Service '{name}' check"
    assert check["Status"] == "critical"
    assert check["Type"] == "ttl"
    two = {"Name": name, "ID": f"{name}-2", "Checks": [{"TTL": "10s"}, {"TTL": "20s"}]}
    assert (await agent.register(two)).status == 200
    checks = await agent.checks()
    assert {f"service:{name}-2:1", f"service:{name}-2:2"} <= set(checks)
    assert f"service:{name}-2" not in checks


async def test_08_a_check_with_status_passing_starts_passing(agent: AgentClient, name: str) -> None:
    body = {"Name": name, "Check": {"TTL": "10s", "Status": "passing"}}
    assert (await agent.register(body)).status == 200
    assert (await check_of(agent, f"service:{name}"))["Status"] == "passing"


async def test_09_pass_with_a_note(agent: AgentClient, name: str) -> None:
    assert (await agent.register(ttl_service(name, f"{name}-1"))).status == 200
    check_id = f"service:{name}-1"
    assert (await check_of(agent, check_id))["Status"] == "critical"
    reply = await agent.call("PUT", f"/v1/agent/check/pass/{check_id}", "note=x")
    assert reply.status == 200, reply.text
    check = await check_of(agent, check_id)
    assert (check["Status"], check["Output"]) == ("passing", "x")

    async def health_passing() -> bool:
        entries = (await agent.health(name)).items()
        return bool(entries) and all(
            c["Status"] == "passing" for e in entries for c in health_checks(e)
        )

    await eventually(health_passing, 2.0, "health to show the check passing")


async def test_10_update_validates_the_status(agent: AgentClient, name: str) -> None:
    assert (await agent.register(ttl_service(name, f"{name}-1"))).status == 200
    path = f"/v1/agent/check/update/service:{name}-1"
    reply = await agent.call("PUT", path, body={"Status": "bogus"})
    assert reply.status == 400, reply.text
    reply = await agent.call("PUT", path, body={"Status": "warning"})
    assert reply.status == 200, reply.text
    assert (await check_of(agent, f"service:{name}-1"))["Status"] == "warning"


async def test_11_updates_of_an_unknown_check_are_404(agent: AgentClient, name: str) -> None:
    # Older agents answered 500 for an unknown check (§2.4); only a real agent may.
    accepted = {404} if agent.emulated else {404, 500}
    reply = await agent.call("PUT", f"/v1/agent/check/pass/service:{name}-nope")
    assert reply.status in accepted, reply.text
    reply = await agent.call(
        "PUT", f"/v1/agent/check/update/service:{name}-nope", body={"Status": "passing"}
    )
    assert reply.status in accepted, reply.text


async def expire_after_one_pass(agent: AgentClient, name: str) -> str:
    """Register a 2 s TTL check, pass it once, wait for the TTL to run out: its ID."""
    assert (await agent.register(ttl_service(name, f"{name}-1", ttl="2s"))).status == 200
    check_id = f"service:{name}-1"
    assert (await agent.call("PUT", f"/v1/agent/check/pass/{check_id}")).status == 200

    async def critical() -> bool:
        return (await check_of(agent, check_id))["Status"] == "critical"

    await eventually(critical, 5.0, "the TTL check to turn critical", poll=0.1)
    return check_id


async def test_12_a_ttl_check_left_alone_turns_critical(agent: AgentClient, name: str) -> None:
    check_id = await expire_after_one_pass(agent, name)
    output = (await check_of(agent, check_id))["Output"]
    assert isinstance(output, str) and output.startswith("TTL expired"), output


async def test_13_an_expired_check_leaves_the_passing_set(agent: AgentClient, name: str) -> None:
    await expire_after_one_pass(agent, name)
    assert service_ids(await agent.health(name, "passing")) == []
    assert service_ids(await agent.health(name)) == [f"{name}-1"]


async def test_14_passing_filter_values(agent: AgentClient, name: str) -> None:
    body = {"Name": name, "ID": f"{name}-1", "Check": {"TTL": "10s", "Status": "warning"}}
    assert (await agent.register(body)).status == 200
    assert service_ids(await agent.health(name, "passing")) == []
    assert service_ids(await agent.health(name, "passing=false")) == [f"{name}-1"]
    reply = await agent.health(name, "passing=maybe")
    assert reply.status == 400, reply.text


async def test_15_reads_carry_index_and_leader_headers(agent: AgentClient, name: str) -> None:
    assert (await agent.register(ttl_service(name, f"{name}-1"))).status == 200
    for path in (
        f"/v1/health/service/{name}",
        "/v1/catalog/services",
        f"/v1/catalog/service/{name}",
    ):
        reply = await agent.get(path)
        assert reply.status == 200, (path, reply.text)
        assert reply.index >= 1, path
        assert reply.headers["X-Consul-KnownLeader"] in ("true", "false"), path


async def test_16_an_unknown_service_is_an_empty_list(agent: AgentClient, name: str) -> None:
    for path in (f"/v1/health/service/{name}", f"/v1/catalog/service/{name}"):
        reply = await agent.get(path)
        assert (reply.status, reply.json()) == (200, []), path
        assert reply.index >= 1, path


async def test_17_health_entry_shape(agent: AgentClient, name: str) -> None:
    assert (await agent.register(ttl_service(name, f"{name}-1"))).status == 200
    [entry] = (await agent.health(name)).items()
    assert {"Node", "Service", "Checks"} <= set(entry)
    service = entry["Service"]
    assert isinstance(service, dict)
    assert service["Tags"] == []
    checks = health_checks(entry)
    assert all(check["ServiceTags"] == [] for check in checks)
    assert any(check["ServiceID"] == "" for check in checks), "no node-level check"


async def test_18_a_blocking_read_without_change_waits_out_wait(
    agent: AgentClient, name: str
) -> None:
    assert (await agent.register(ttl_service(name, f"{name}-1"))).status == 200
    index = (await agent.health(name)).index
    start = time.monotonic()
    reply = await agent.health(name, f"index={index}&wait=1s")
    elapsed = time.monotonic() - start
    assert reply.status == 200, reply.text
    assert 1.0 <= elapsed <= 1.3, elapsed
    assert reply.index >= index


async def test_19_a_blocking_read_wakes_on_a_registration(agent: AgentClient, name: str) -> None:
    assert (await agent.register(ttl_service(name, f"{name}-1"))).status == 200
    index = (await agent.health(name)).index
    waiting = asyncio.create_task(agent.health(name, f"index={index}&wait=30s"))
    assert (await agent.register(ttl_service(name, f"{name}-2"))).status == 200
    async with asyncio.timeout(2.0):  # cancels the read if it does not come back in time
        reply = await waiting
    assert reply.index > index
    assert service_ids(reply) == [f"{name}-1", f"{name}-2"]


async def test_20_index_zero_does_not_block(agent: AgentClient, name: str) -> None:
    start = time.monotonic()
    reply = await agent.health(name, "index=0&wait=30s")
    assert reply.status == 200, reply.text
    assert time.monotonic() - start < 1.0


async def test_21_bad_wait_and_index_are_400(agent: AgentClient, name: str) -> None:
    reply = await agent.health(name, "wait=abc")
    assert (reply.status, reply.text) == (400, "Invalid wait time")
    reply = await agent.health(name, "index=-1")
    assert (reply.status, reply.text) == (400, "Invalid index")


async def test_22_deregister_removes_service_and_checks(agent: AgentClient, name: str) -> None:
    assert (await agent.register(ttl_service(name, f"{name}-1"))).status == 200
    reply = await agent.deregister(f"{name}-1")
    assert reply.status == 200, reply.text
    assert f"{name}-1" not in await agent.services()
    assert f"service:{name}-1" not in await agent.checks()

    async def gone_from_health() -> bool:
        return service_ids(await agent.health(name)) == []

    await eventually(gone_from_health, 2.0, "health to drop the instance")


async def test_23_unknown_service_ids_are_404(agent: AgentClient, name: str) -> None:
    reply = await agent.deregister(f"{name}-nope")
    assert reply.status == 404
    assert reply.text.startswith('Unknown service ID "'), reply.text
    reply = await agent.get(f"/v1/agent/service/{name}-nope")
    assert reply.status == 404, reply.text


async def test_24_re_registering_keeps_the_check_state(agent: AgentClient, name: str) -> None:
    body = ttl_service(name, f"{name}-1")
    assert (await agent.register(body)).status == 200
    assert (await agent.call("PUT", f"/v1/agent/check/pass/service:{name}-1")).status == 200
    assert (await agent.register(body)).status == 200
    assert (await check_of(agent, f"service:{name}-1"))["Status"] == "passing"
    services = await agent.services()
    mine = [v for v in services.values() if isinstance(v, dict) and v["Service"] == name]
    assert len(mine) == 1
    assert service_ids(await agent.health(name)) == [f"{name}-1"]


async def test_25_replace_existing_checks(agent: AgentClient, name: str) -> None:
    for service_id, query, kept in (
        (f"{name}-1", "replace-existing-checks", "a"),
        (f"{name}-2", "", "ab"),
    ):
        # Check IDs are per agent, so each service names its own.
        checks = [{"CheckID": f"{service_id}:{letter}", "TTL": "10s"} for letter in "ab"]
        body: dict[str, object] = {"Name": name, "ID": service_id, "Checks": checks}
        assert (await agent.register(body)).status == 200
        body["Checks"] = checks[:1]
        assert (await agent.register(body, query)).status == 200
        present = {cid for cid in await agent.checks() if cid.startswith(f"{service_id}:")}
        assert present == {f"{service_id}:{letter}" for letter in kept}, query


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_26_a_service_critical_past_deregister_after_is_reaped(
    agent: AgentClient, name: str
) -> None:
    # TTL 2 s never passed; DCSA 1m: not before 60 s critical, gone by TTL + 60 + 30 + 5 s.
    # (With the emulator the minute and the reaper's 30 s are scaled; TTL and slack are not.)
    scale = agent.reaper_scale
    start = time.monotonic()
    check = {"ttl": "2s", "DeregisterCriticalServiceAfter": f"{60 * scale:g}s"}
    body = {"name": name, "id": f"{name}-1", "checks": [check]}
    assert (await agent.register(body)).status == 200
    present_at = 2.0 + 53.0 * scale  # still within DCSA of turning critical
    await asyncio.sleep(present_at - (time.monotonic() - start))  # the interval measured
    assert f"{name}-1" in await agent.services()

    async def reaped() -> bool:
        return f"{name}-1" not in await agent.services()

    gone_by = 2.0 + (60.0 + 30.0) * scale + 5.0
    await eventually(reaped, gone_by - (time.monotonic() - start), "the reaper", poll=scale)


async def test_27_catalog_lists_tags_and_critical_instances(agent: AgentClient, name: str) -> None:
    for number, tag in ((1, "v1"), (2, "v2")):
        body = ttl_service(name, f"{name}-{number}", tags=[tag])
        assert (await agent.register(body)).status == 200
    services = (await agent.get("/v1/catalog/services")).obj()
    tags = services[name]
    assert isinstance(tags, list)
    assert sorted(tags) == ["v1", "v2"]
    entries = (await agent.get(f"/v1/catalog/service/{name}")).items()
    assert sorted(str(e["ServiceID"]) for e in entries) == [f"{name}-1", f"{name}-2"]
    assert (await check_of(agent, f"service:{name}-1"))["Status"] == "critical"


async def test_28_status_leader_is_a_json_string(agent: AgentClient) -> None:
    reply = await agent.get("/v1/status/leader")
    assert reply.status == 200
    leader = reply.json()
    assert isinstance(leader, str) and leader


async def test_29_wrong_method_is_405(agent: AgentClient) -> None:
    reply = await agent.get("/v1/agent/service/register")
    assert reply.status == 405, reply.text


@pytest.mark.filterwarnings("ignore:ssl_context is deprecated:DeprecationWarning")
async def test_30_py_consul_round_trip(agent: AgentClient, name: str) -> None:
    parts = urlsplit(agent.base)
    assert parts.hostname is not None and parts.port is not None
    client = consul.aio.Consul(
        host=parts.hostname, port=parts.port, scheme=parts.scheme, token=agent.token or None
    )
    try:
        check = {"ttl": "10s", "Status": "passing"}
        assert await client.agent.service.register(name, service_id=f"{name}-1", check=check)
        agent.registered.add(f"{name}-1")
        index, nodes = await client.health.service(name, passing=True)
        assert isinstance(index, str) and isinstance(nodes, list)
        assert [n["Service"]["ID"] for n in nodes] == [f"{name}-1"]
        assert await client.agent.check.ttl_pass(f"service:{name}-nope") is False
        start = time.monotonic()
        await client.health.service(name, index=int(index), wait="1s")
        assert 0.9 <= time.monotonic() - start < 2.0
    finally:
        await client.close()


def test_every_checklist_item_has_its_test() -> None:
    numbers = sorted(int(n[5:7]) for n in globals() if n.startswith("test_") and n[5:7].isdigit())
    assert numbers == list(range(1, 31))

"""The emulator's own contract: its cores, its knobs, its lifecycle and the rules of
consul-api.md that the §6 checklist does not exercise. Emulator only, fast timings."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import grpc
import pytest
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ._client import AgentClient, eventually
from ._definition import CheckType, decode_registration
from ._duration import DurationError, format_duration, parse_duration
from ._emulator import ConsulEmulator
from ._errors import ApiError
from ._query import ReadOptions
from ._state import AgentState
from ._validation import check_definition

ROOT = Path(__file__).resolve().parents[2]
FAST = {"reap_interval": 0.5, "min_deregister_after": 1.0, "wait_jitter": False}


@asynccontextmanager
async def running(**options: object) -> AsyncIterator[tuple[ConsulEmulator, AgentClient]]:
    """An emulator with `options` (fast knobs by default) and a client for it."""
    settings = {**FAST, **options}
    async with (
        ConsulEmulator(**settings) as emulator,  # type: ignore[arg-type]  # keyword knobs
        aiohttp.ClientSession() as session,
    ):
        yield emulator, AgentClient(session, emulator.address)


# -- cores ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("10s", 10_000_000_000),
        ("1m30s", 90_000_000_000),
        ("500ms", 500_000_000),
        ("1.5s", 1_500_000_000),
        ("-1.5h", -5_400_000_000_000),
        ("+5us", 5_000),
        ("1\u00b5s", 1_000),
        ("0", 0),
        ("1h2m3.5s", 3_723_500_000_000),
        (".5s", 500_000_000),
    ],
)
def test_go_durations_parse(text: str, nanos: int) -> None:
    assert parse_duration(text) == nanos


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10", 'time: missing unit in duration "10"'),
        ("10 s", 'time: unknown unit " s" in duration "10 s"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        ("", 'time: invalid duration ""'),
        (".s", 'time: invalid duration ".s"'),
        ("s", 'time: invalid duration "s"'),
        ("9999999999999h", 'time: invalid duration "9999999999999h"'),
    ],
)
def test_go_durations_reject_with_go_messages(text: str, message: str) -> None:
    with pytest.raises(DurationError) as info:
        parse_duration(text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("nanos", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (1_500, "1.5\u00b5s"),
        (1_500_000, "1.5ms"),
        (10_000_000_000, "10s"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (-1_500_000_000, "-1.5s"),
    ],
)
def test_go_durations_format(nanos: int, text: str) -> None:
    assert format_duration(nanos) == text


def decode_error(body: object) -> str:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(ApiError) as info:
        check_definition(decode_registration(raw))
    return f"{info.value.status} {info.value.message}"


def test_decoding_matches_keys_like_go() -> None:
    raw = b'{"nAmE": "web", "Name": "api", "id": null, "ID": "a", "id": null, "Port": 80} junk'
    definition = decode_registration(raw)
    # Case-insensitive keys, last one wins, null keeps the field, trailing data is not read.
    assert (definition.name, definition.id, definition.port) == ("api", "a", 80)
    snake = {
        "Name": "web",
        "enable_tag_override": True,
        "tagged_addresses": {"lan": {"Address": "10.0.0.1", "Port": 1}},
        "Check": {"TTL": "1s", "deregister_critical_service_after": "90s", "tls_skip_verify": True},
    }
    definition = decode_registration(json.dumps(snake).encode())
    assert definition.enable_tag_override
    assert definition.tagged_addresses["lan"].address == "10.0.0.1"
    [check] = check_definition(definition)
    assert (check.deregister_after, check.tls_skip_verify) == (90_000_000_000, True)


DECODE = "400 Request decode failed: "
UNMARSHAL = DECODE + "json: cannot unmarshal "
META = "400 Invalid Service Meta: "


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", DECODE + "EOF"),
        (b'{"Name": NaN}', DECODE + "invalid character 'N' looking for beginning of value"),
        (b'{"Name": "x"', DECODE + "unexpected EOF"),
        ({"Name": "x", "Port": "80"}, UNMARSHAL + "string into Go struct field .Port of type int"),
        (
            {"Name": "x", "Port": 1.5},
            UNMARSHAL + "number 1.5 into Go struct field .Port of type int",
        ),
        (
            {"Name": "x", "Meta": {"a": 1}},
            UNMARSHAL + "number into Go struct field .Meta of type string",
        ),
        (
            {"Name": "x", "Tags": "v1"},
            UNMARSHAL + "string into Go struct field .Tags of type []string",
        ),
        ({"Name": "x", "Check": {"TTL": "1d"}}, DECODE + 'time: unknown unit "d" in duration "1d"'),
        ({"Name": "x", "Check": {"Bogus": 1}}, DECODE + 'json: unknown field "Bogus"'),
        (
            {"Name": "x", "Checks": [{"TTL": True}]},
            "400 Invalid check: TTL must be > 0 for TTL checks",
        ),
        (
            {"Name": "x", "Check": {"TTL": "1s", "Interval": "1s"}},
            "400 Invalid check: Interval and TTL cannot both be specified",
        ),
        (
            {"Name": "x", "Check": {"TTL": "1s", "Status": "ok"}},
            "400 Status for checks must 'passing', 'warning', 'critical'",
        ),
        (
            {"Name": "x", "Checks": [None]},
            "500 runtime error: invalid memory address or nil pointer dereference",
        ),
        (
            {"Name": "x", "Weights": {"Passing": 0}},
            "400 Invalid Weights: Passing must be greater than 0",
        ),
        (
            {"Name": "x", "Meta": {"consul-x": "1"}},
            META + "Couldn't load metadata pair ('consul-x', '1'): "
            "Key prefix 'consul-' is reserved for internal use",
        ),
        (
            {"Name": "x", "Meta": {"a b": "1"}},
            META + "Couldn't load metadata pair ('a b', '1'): Key contains invalid characters",
        ),
        (
            {"Name": "x", "Meta": {"k": "v" * 513}},
            META + f"Couldn't load metadata pair ('k', '{'v' * 513}'): "
            "Value is too long (limit: 512 characters)",
        ),
        (
            {"Name": "x", "Meta": {f"k{i}": "" for i in range(65)}},
            META + "Node metadata cannot contain more than 64 key/value pairs",
        ),
    ],
)
def test_bad_registrations_get_the_agents_errors(body: object, error: str) -> None:
    assert decode_error(body) == error


def test_an_empty_check_object_is_no_check() -> None:
    # CheckType.Empty(): `{}`, or only fields the decoder ignores (a non-duration TTL).
    for check in (b"{}", b'{"TTL": true}', b"null"):
        body = b'{"Name": "x", "Check": ' + check + b"}"
        assert check_definition(decode_registration(body)) == []


def test_read_options_default_cap_and_jitter() -> None:
    assert ReadOptions(1, 0).wait_seconds(None) == 300.0
    assert ReadOptions(1, parse_duration("20m")).wait_seconds(None) == 600.0
    assert ReadOptions(1, parse_duration("-1s")).wait_seconds(None) == 300.0
    rng = random.Random(7)
    waits = [ReadOptions(1, parse_duration("16s")).wait_seconds(rng) for _ in range(200)]
    assert all(16.0 <= w < 17.0 for w in waits) and max(waits) > 16.5


def new_state(**knobs: float) -> AgentState:
    return AgentState(
        node="n",
        address="127.0.0.1",
        min_deregister_after=knobs.get("min_deregister_after", 60.0),
        check_update_interval=knobs.get("check_update_interval", 300.0),
        rng=random.Random(1),
    )


def register(state: AgentState, body: Mapping[str, object], now: float = 0.0) -> None:
    definition = decode_registration(json.dumps(body).encode())
    checks = check_definition(definition)
    state.register(definition, checks, replace_existing_checks=False, now=now)


def test_probe_results_respect_success_and_failure_thresholds() -> None:
    state = new_state()
    check = {
        "TCP": "127.0.0.1:1",
        "Interval": "1s",
        "SuccessBeforePassing": 2,
        "FailuresBeforeCritical": 2,
    }
    register(state, {"Name": "w", "Check": check})
    generation = state.checks["service:w"].generation
    statuses = []
    for verdict in ("passing", "critical", "critical", "passing", "passing"):
        state.record_probe("service:w", generation, verdict, "out", now=1.0)
        statuses.append(state.checks["service:w"].status)
    # The first result counts at once (counters start at the thresholds), later ones need two.
    assert statuses == ["passing", "passing", "critical", "critical", "passing"]
    state.record_probe("service:w", generation - 1, "critical", "stale", now=2.0)
    state.record_probe("service:w", generation - 1, "critical", "stale", now=2.0)
    assert state.checks["service:w"].status == "passing"


def test_the_index_moves_only_when_the_catalog_changes() -> None:
    state = new_state()
    body = {"Name": "w", "Check": {"TTL": "10s", "Status": "passing"}}
    register(state, body)
    index = state.index
    register(state, body, now=1.0)  # identical: the agent believes it is in sync
    state.update_ttl("service:w", "passing", "", now=2.0)  # same status, same output
    assert state.index == index
    state.update_ttl("service:w", "passing", "busy", now=3.0)  # output only: deferred (§3.6)
    assert (state.index, state.checks["service:w"].synced_output) == (index, "")
    deferred = state.checks["service:w"].sync_deadline
    assert deferred is not None and 150.0 <= deferred - 3.0 <= 450.0
    state.update_ttl("service:w", "warning", "slow", now=4.0)  # status: synced at once
    assert (state.index, state.checks["service:w"].synced_output) == (index + 1, "slow")


def test_ttl_output_is_cut_at_four_kib() -> None:
    state = new_state()
    register(state, {"Name": "w", "Check": {"TTL": "10s"}})
    state.update_ttl("service:w", "passing", "x" * 5000, now=1.0)
    assert state.checks["service:w"].output == "x" * 4096 + " ... (captured 4096 of 5000 bytes)"


def test_the_reaper_clock_starts_when_the_check_turns_critical() -> None:
    state = new_state(min_deregister_after=60.0)
    register(state, {"Name": "w", "Check": {"TTL": "2s", "DeregisterCriticalServiceAfter": "10s"}})
    assert state.checks["service:w"].reap_after == 60.0  # raised to the minimum (§3.4)
    state.tick(2.0)  # TTL expired: critical since 2.0
    assert state.reap(61.0) == [] and state.reap(62.5) == ["w"]
    assert state.services == {} and state.checks == {}


# -- the server ---------------------------------------------------------------------------------


async def test_every_answer_carries_the_default_acl_policy() -> None:
    for tokens, policy in ((None, "allow"), (frozenset({"s3cret"}), "deny")):
        async with running(acl_tokens=tokens) as (_, agent):
            for method, path in (
                ("GET", "/v1/status/leader"),
                ("GET", "/v1/nope"),
                ("PUT", "/v1/status/leader"),
            ):
                reply = await agent.call(method, path)
                assert reply.headers["X-Consul-Default-ACL-Policy"] == policy, (method, path)


async def test_acl_tokens_and_the_anonymous_token() -> None:
    async with running(acl_tokens=frozenset({"s3cret"})) as (emulator, agent):
        body = {"Name": "web", "Check": {"TTL": "10s"}}
        reply = await agent.call("PUT", "/v1/agent/service/register", body=body)
        assert reply.status == 403 and reply.text.startswith("Permission denied"), reply.text
        for header in ({"X-Consul-Token": "wrong"}, {"Authorization": "Bearer wrong"}):
            async with agent.session.get(f"{agent.base}/v1/agent/services", headers=header) as r:
                assert (r.status, await r.text()) == (403, "ACL not found")
        async with agent.session.put(
            f"{agent.base}/v1/agent/service/register",
            json=body,
            headers={"Authorization": "Bearer s3cret"},
        ) as r:
            assert r.status == 200
        assert "web" in emulator.services()
        # Anonymous reads come back without what the token may not see.
        assert (await agent.get("/v1/agent/services")).obj() == {}
        assert (await agent.health("web")).items() == []
        assert (await agent.get("/v1/status/leader")).status == 200
        assert (await agent.get("/v1/agent/services", "token=s3cret")).obj() != {}
        assert (await agent.get("/v1/catalog/services", "token=nope")).status == 403


async def test_a_restart_forgets_everything_and_lowers_the_index() -> None:
    async with running() as (emulator, agent):
        port = emulator.port
        for number in range(5):
            assert (
                await agent.register(
                    {"Name": "web", "ID": f"web-{number}", "Check": {"TTL": "10s"}}
                )
            ).status == 200
        before = (await agent.health("web")).index
        await emulator.restart()
        assert emulator.port == port and emulator.services() == {} and emulator.checks() == {}
        assert (await agent.health("web")).index < before  # indexes go backwards (§4)
        assert (await agent.call("PUT", "/v1/agent/check/pass/service:web-1")).status == 404


async def test_a_restart_with_state_keeps_registrations_and_fresh_ttl_state() -> None:
    async with running() as (emulator, agent):
        body = {
            "Name": "web",
            "Checks": [{"CheckID": "long", "TTL": "1m"}, {"CheckID": "short", "TTL": "1s"}],
        }
        assert (await agent.register(body)).status == 200
        for check_id in ("long", "short"):
            assert (
                await agent.call("PUT", f"/v1/agent/check/pass/{check_id}", "note=up")
            ).status == 200
        await emulator.stop()
        await asyncio.sleep(1.1)  # the short TTL's persisted state expires while the agent is down
        await emulator.restart(forget=False)
        checks = emulator.checks()
        assert (checks["long"]["Status"], checks["long"]["Output"]) == ("passing", "up")
        assert (checks["short"]["Status"], checks["short"]["Output"]) == ("critical", "")


async def test_stop_cuts_blocking_reads_and_start_serves_the_same_port() -> None:
    async with running() as (emulator, agent):
        assert (await agent.register({"Name": "web"})).status == 200
        index = (await agent.health("web")).index
        waiting = asyncio.create_task(agent.health("web", f"index={index}&wait=30s"))
        await eventually(_async(lambda: emulator.waiting_reads == 1), 2.0, "the read to block")
        start = time.monotonic()
        await emulator.stop()
        with pytest.raises(aiohttp.ClientError):
            await waiting
        assert time.monotonic() - start < 2.0
        with pytest.raises(aiohttp.ClientConnectionError):
            await agent.get("/v1/status/leader")
        await emulator.start()
        assert "web" in (await agent.get("/v1/agent/services")).obj()


def _async(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()

    return check


async def test_services_are_reaped_after_the_minimum_critical_time() -> None:
    async with running() as (emulator, agent):
        check = {"TTL": "1s", "DeregisterCriticalServiceAfter": "10ms"}  # raised to 1 s
        start = time.monotonic()
        assert (await agent.register({"Name": "doomed", "Check": check})).status == 200

        async def reaped() -> bool:
            return "doomed" not in emulator.services()

        await eventually(reaped, 6.0, "the reaper")
        # Critical from the TTL expiry at 1 s, then more than the 1 s minimum.
        assert time.monotonic() - start >= 2.0


async def test_output_only_changes_reach_health_after_the_update_interval() -> None:
    async with running(check_update_interval=2.0) as (emulator, agent):
        body = {"Name": "web", "Check": {"TTL": "10s", "Status": "passing"}}
        assert (await agent.register(body)).status == 200
        index = (await agent.health("web")).index
        assert (
            await agent.call("PUT", "/v1/agent/check/pass/service:web", "note=busy")
        ).status == 200
        assert emulator.checks()["service:web"]["Output"] == "busy"
        [entry] = (await agent.health("web")).items()
        assert '"Output":""' in json.dumps(entry["Checks"], separators=(",", ":"))
        assert "busy" not in json.dumps(entry)
        reply = await agent.health("web", f"index={index}&wait=10s")  # synced in 1-3 s
        assert reply.index > index
        assert "busy" in reply.text


async def test_blocking_without_jitter_waits_the_wait_and_passing_is_parsed_after() -> None:
    async with running() as (_, agent):
        index = (await agent.health("web")).index
        start = time.monotonic()
        reply = await agent.health("web", f"index={index}&wait=1s&passing=maybe")
        assert 1.0 <= time.monotonic() - start < 1.2
        assert (reply.status, reply.text) == (400, "Invalid value for ?passing")
        assert reply.index == index


async def test_health_shows_meta_null_when_none_was_registered() -> None:
    async with running() as (emulator, agent):
        assert (
            await agent.register({"Name": "web", "Address": "10.0.0.5", "Port": 80})
        ).status == 200
        [entry] = (await agent.health("web")).items()
        service = entry["Service"]
        assert isinstance(service, dict) and service["Meta"] is None
        assert emulator.services()["web"]["Meta"] == {}
        tagged = {"Address": "10.0.0.5", "Port": 80}
        assert service["TaggedAddresses"] == {"lan_ipv4": tagged, "wan_ipv4": tagged}


async def test_routing_like_the_agents_mux() -> None:
    async with running() as (_, agent):
        async with agent.session.options(f"{agent.base}/v1/agent/service/register") as r:
            assert (r.status, r.headers["Allow"]) == (200, "OPTIONS,PUT")
        reply = await agent.get("/v1/agent/service/register")
        assert (reply.status, reply.headers["Allow"], reply.text) == (
            405,
            "OPTIONS,PUT",
            "method GET not allowed",
        )
        async with agent.session.get(f"{agent.base}/v1/health/service", allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (301, "/v1/health/service/")
        assert (await agent.get("/v1/health/service/", "")).text == "Missing service name"
        assert (await agent.get("/v1/status/leader", "a=%zz")).status == 500
        assert (await agent.get("/v1/status/leader", "pretty")).text.endswith('"\n')


async def test_http_checks_follow_the_status_code() -> None:
    answer = {"status": 200}

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=answer["status"], text="ok")

    async with _serving(health) as url, running() as (emulator, agent):
        body = {"Name": "web", "Check": {"HTTP": url, "Interval": "100ms"}}  # runs every 1 s
        assert (await agent.register(body)).status == 200
        for status, expected in ((200, "passing"), (429, "warning"), (500, "critical")):
            answer["status"] = status

            async def reached(expected: str = expected) -> bool:
                return emulator.checks()["service:web"]["Status"] == expected

            await eventually(reached, 5.0, f"the check to turn {expected}")
        assert (
            emulator.checks()["service:web"]["Output"]
            == f"HTTP GET {url}: 500 Internal Server Error Output: ok"
        )


async def test_tcp_checks_pass_on_an_open_port_and_fail_on_a_closed_one() -> None:
    async with running() as (emulator, agent):
        closed = _closed_port()
        checks = [
            {"CheckID": "open", "TCP": emulator.address, "Interval": "1s", "Status": "critical"},
            {
                "CheckID": "closed",
                "TCP": f"127.0.0.1:{closed}",
                "Interval": "1s",
                "Status": "passing",
            },
        ]
        assert (await agent.register({"Name": "web", "Checks": checks})).status == 200

        async def settled() -> bool:
            checks = emulator.checks()
            return (checks["open"]["Status"], checks["closed"]["Status"]) == ("passing", "critical")

        await eventually(settled, 5.0, "both TCP checks to run")
        assert (
            emulator.checks()["closed"]["Output"]
            == f"dial tcp 127.0.0.1:{closed}: connect: connection refused"
        )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@asynccontextmanager
async def _serving(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/health", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/health"
    finally:
        await runner.cleanup()


async def test_snapshots_are_copies() -> None:
    async with running() as (emulator, agent):
        assert (
            await agent.register({"Name": "web", "Tags": ["a"], "Check": {"TTL": "1m"}})
        ).status == 200
        emulator.services()["web"]["Tags"] = ["changed"]
        emulator.checks().clear()
        assert emulator.services()["web"]["Tags"] == ["a"]
        assert list(emulator.checks()) == ["service:web"]


# -- as a process -------------------------------------------------------------------------------


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, object]]]:
    ready = tmp_path / "ready.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [
        sys.executable,
        "-m",
        "tests.consul_emulator",
        "--port",
        "0",
        "--ready-file",
        str(ready),
    ]
    proc = subprocess.Popen(command, cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 30.0
        while not ready.exists():
            assert proc.poll() is None, f"exited with {proc.returncode} before it was ready"
            assert time.monotonic() < deadline, "no ready file after 30 s"
            time.sleep(0.02)
        yield proc, json.loads(ready.read_text())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_process_serves_until_signalled(
    emulator_process: tuple[subprocess.Popen[bytes], dict[str, object]], signum: signal.Signals
) -> None:
    proc, info = emulator_process
    assert info["pid"] == proc.pid
    with urllib.request.urlopen(
        f"http://{info['address']}/v1/status/leader", timeout=10
    ) as response:
        assert json.loads(response.read()) == "127.0.0.1:8300"
    proc.send_signal(signum)
    assert proc.wait(timeout=15) == 0


def test_check_types_report_their_kind() -> None:
    assert [
        CheckType(ttl=1).kind,
        CheckType(http="h", interval=1).kind,
        CheckType(tcp="t").kind,
    ] == ["ttl", "http", ""]


async def test_grpc_checks_ask_the_standard_health_service() -> None:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    serving = health_pb2.HealthCheckResponse.SERVING
    await servicer.set("web", serving)
    try:
        async with running() as (emulator, agent):
            target = f"127.0.0.1:{port}/web"
            body = {"Name": "web", "Check": {"GRPC": target, "Interval": "1s"}}
            assert (await agent.register(body)).status == 200
            for status, expected in (
                (serving, "passing"),
                (health_pb2.HealthCheckResponse.NOT_SERVING, "critical"),
            ):
                await servicer.set("web", status)

                async def reached(expected: str = expected) -> bool:
                    return emulator.checks()["service:web"]["Status"] == expected

                await eventually(reached, 5.0, f"the gRPC check to turn {expected}")
            output = emulator.checks()["service:web"]["Output"]
            assert output == f"gRPC {target} serving status: NOT_SERVING"
    finally:
        await server.stop(None)


async def test_header_names_are_spelled_as_go_writes_them() -> None:
    async with running() as (_, agent):
        reply = await agent.get("/v1/catalog/services")
        names = set(reply.headers)
        assert {"X-Consul-Index", "X-Consul-Knownleader", "X-Consul-Lastcontact"} <= names
        assert "X-Consul-Default-Acl-Policy" in names


async def test_replace_existing_checks_is_on_only_when_empty_or_true() -> None:
    async with running() as (emulator, agent):
        checks = [{"CheckID": cid, "TTL": "10s"} for cid in ("a", "b")]
        assert (await agent.register({"Name": "web", "Checks": checks})).status == 200
        for query, left in (
            ("replace-existing-checks=1", ["a", "b"]),
            ("replace-existing-checks=true", ["a"]),
        ):
            assert (
                await agent.register({"Name": "web", "Checks": checks[:1]}, query)
            ).status == 200
            assert list(emulator.checks()) == left, query


async def test_the_catalog_lists_the_consul_service_and_its_node_check() -> None:
    async with running() as (_, agent):
        assert (await agent.get("/v1/catalog/services")).obj() == {"consul": []}
        [entry] = (await agent.health("consul", "passing")).items()
        assert entry["Service"]["Port"] == 8300  # type: ignore[index]  # a JSON object

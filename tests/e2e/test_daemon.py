"""`sidecar run` end to end: real sidecars, real serve() replicas, the Consul emulator.

Each test starts the emulator and the sidecars as child processes, as users run them, and
calls through a sidecar's mesh port with BlockingMeshClient.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from sidecar import BlockingMeshClient

from ..conftest import ServeProcess, child_env, wait_for
from .conftest import Sidecar

DOUBLER = """
from sidecar import serve
async def double(inputs):
    return {{"y": inputs["x"] * 2}}
serve(double, service="toy", ready_file={ready!r}, uds_path={uds!r})
"""


def _app(replica: ServeProcess) -> str:
    return f"tcp://{replica.mesh}"


def _wait_routable(client: BlockingMeshClient, replicas: int = 1) -> None:
    """Until a request goes through (the registry saw the replicas and their apps)."""

    def ok() -> bool:
        try:
            client.infer("toy", {"x": np.ones(2)}, timeout=5)
        except Exception:
            return False
        return True

    wait_for(ok, 20, "a request to go through the sidecars")


def test_through_two_sidecars_tensors_pass_by_reference(
    serve_process: Callable[[str], ServeProcess], sidecars: Callable[..., Sidecar]
) -> None:
    replica = serve_process(DOUBLER)
    front = sidecars("toy", app=_app(replica))
    caller = sidecars("pipeline")
    with BlockingMeshClient(caller.mesh) as client:
        _wait_routable(client)
        small = client.infer("toy", {"x": np.arange(5)})["y"]
        np.testing.assert_array_equal(small, np.arange(5) * 2)
        big = np.arange(1 << 20, dtype=np.float32)
        np.testing.assert_array_equal(client.infer("toy", {"x": big})["y"], big * 2)
        chunk = client.alloc((1 << 18,), np.float64)
        chunk[:] = 1.5
        np.testing.assert_array_equal(client.infer("toy", {"x": chunk})["y"], 3.0)
        del chunk
    # Both hops moved the large tensors as descriptors, never as bytes on a socket.
    for sidecar in (caller, front):
        assert sidecar.metric("arrowmesh_relayed_bytes_total", mode="reference") >= big.nbytes
        assert sidecar.metric("arrowmesh_relayed_bytes_total", mode="copied") == 0
    assert caller.metric("arrowmesh_requests_total", service="toy", outcome="ok") >= 3
    assert front.stop() == 0 and caller.stop() == 0
    assert replica.stop() == 0


def test_a_hop_that_cannot_share_memory_gets_the_tensors_copied_once(
    serve_process: Callable[[str], ServeProcess], sidecars: Callable[..., Sidecar], tmp_path: Path
) -> None:
    replica = serve_process(DOUBLER)
    other = tempfile_dir(tmp_path)
    front = sidecars("toy", app=_app(replica), shm_dir=other)  # another tmpfs volume
    caller = sidecars("pipeline")
    with BlockingMeshClient(caller.mesh) as client:
        _wait_routable(client)
        big = np.arange(1 << 20, dtype=np.int32)
        np.testing.assert_array_equal(client.infer("toy", {"x": big})["y"], big * 2)
    assert caller.metric("arrowmesh_relayed_bytes_total", mode="copied") >= big.nbytes
    assert front.metric("arrowmesh_relayed_bytes_total", mode="reference") == 0
    assert front.stop() == 0 and caller.stop() == 0
    assert replica.stop() == 0
    assert not list(Path(other).iterdir())
    Path(other).rmdir()


def tempfile_dir(tmp_path: Path) -> str:
    path = Path("/dev/shm") / f"arrowmesh-other-{os.getpid()}-{tmp_path.name}"
    path.mkdir(mode=0o700)
    return str(path)


def _dead_holders(directory: Path) -> list[str]:
    """Lock files in the shm directory whose process is gone (nobody holds their flock)."""
    dead = []
    for lock in directory.glob("*.lock"):
        with contextlib.suppress(FileNotFoundError), lock.open("rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            fcntl.flock(f, fcntl.LOCK_UN)
            dead.append(lock.name)
    return dead


def test_a_killed_replica_is_routed_around(
    serve_process: Callable[[str], ServeProcess],
    sidecars: Callable[..., Sidecar],
    shm_dir: Path,
) -> None:
    replicas = [serve_process(DOUBLER) for _ in range(2)]
    fronts = [sidecars("toy", app=_app(r)) for r in replicas]
    caller = sidecars("pipeline")
    with BlockingMeshClient(caller.mesh) as client:
        _wait_routable(client)
        wait_for(lambda: len(json.loads(caller.admin("/endpoints")[1])["toy"]["endpoints"]) == 2,
                 20, "both replicas routable")  # fmt: skip
        replicas[0].proc.kill()
        replicas[0].proc.wait()
        # Its sidecar's app probe fails, it fails its TTL check, the caller's cluster drops it.
        wait_for(lambda: len(json.loads(caller.admin("/endpoints")[1])["toy"]["endpoints"]) == 1,
                 10, "the dead replica to leave the caller's cluster")  # fmt: skip
        for i in range(30):
            assert client.infer("toy", {"x": np.array([i])}, timeout=5)["y"][0] == 2 * i
    assert fronts[0].admin("/readyz")[0] == 503
    # The killed replica's arena is reclaimed by the reapers of the processes still alive.
    wait_for(lambda: not _dead_holders(shm_dir), 10, "the killed replica's files to be reaped")
    for sidecar in (*fronts, caller):
        assert sidecar.stop() == 0
    assert replicas[1].stop() == 0


def test_sigterm_under_load_loses_no_request(
    serve_process: Callable[[str], ServeProcess], sidecars: Callable[..., Sidecar]
) -> None:
    replicas = [serve_process(DOUBLER) for _ in range(2)]
    fronts = [sidecars("toy", app=_app(r)) for r in replicas]
    caller = sidecars("pipeline")
    results: list[object] = []
    done = threading.Event()
    with BlockingMeshClient(caller.mesh) as probe:
        _wait_routable(probe)
        wait_for(lambda: len(json.loads(caller.admin("/endpoints")[1])["toy"]["endpoints"]) == 2,
                 20, "both replicas routable")  # fmt: skip

    def load(worker: int) -> None:
        with BlockingMeshClient(caller.mesh) as client:
            deadline = time.monotonic() + 30
            for i in range(150):  # bounded in count and in time
                if time.monotonic() > deadline:
                    break
                x = np.array([worker * 1000 + i])
                try:
                    results.append(
                        bool(client.infer("toy", {"x": x}, timeout=10)["y"][0] == 2 * x[0])
                    )
                except Exception as exc:  # collected and asserted below
                    results.append(exc)
                if i == 40 and worker == 0:
                    done.set()

    threads = [threading.Thread(target=load, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    assert done.wait(30)
    assert fronts[0].stop() == 0  # drains while the load goes on
    for t in threads:
        t.join(60)
    failures = [r for r in results if r is not True]
    assert not failures, failures[:5]
    assert len(results) >= 300
    for sidecar in (fronts[1], caller):
        assert sidecar.stop() == 0
    for replica in replicas:
        assert replica.stop() == 0


def test_admin_endpoints_answer_and_hide_secrets(
    serve_process: Callable[[str], ServeProcess], sidecars: Callable[..., Sidecar]
) -> None:
    replica = serve_process(DOUBLER)
    front = sidecars("toy", app=_app(replica))
    wait_for(lambda: front.admin("/readyz")[0] == 200, 20, "the sidecar to be ready")
    assert front.admin("/healthz")[0] == 200
    status, config = front.admin("/config")
    assert status == 200 and json.loads(config)["settings"]["service"] == "toy"
    assert front.admin("/nope")[0] == 404
    assert "arrowmesh_app_healthy 1.0" in front.admin("/metrics")[1]
    assert front.stop() == 0
    assert replica.stop() == 0


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--service", "toy", "--mesh-addr", "nope"], "--mesh-addr"),
        (["--mesh-addr", "127.0.0.1:0"], "--service"),
        (["--service", "toy", "--app", "ftp://x"], "--app"),
        (["--service", "toy", "--discovery", "etcd://x"], "--discovery"),
    ],
)
def test_bad_configuration_exits_2_naming_the_setting(argv: list[str], says: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "run", *argv],
        env=child_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert says in result.stderr


def test_a_taken_port_exits_2_naming_the_listener(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        static = tmp_path / "mesh.yaml"
        static.write_text("services: {}\n")
        result = subprocess.run(
            [sys.executable, "-m", "sidecar", "run", "--service", "toy",
             "--mesh-addr", f"127.0.0.1:{port}", "--discovery", f"static://{static}"],
            env=child_env(), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "--mesh-addr" in result.stderr


WEB_APP = """
import asyncio, json, sys
from aiohttp import web

async def hello(request):
    body = await request.read()
    return web.json_response({{"path": request.path_qs, "body": body.decode(),
                               "trace": request.headers.get("traceparent", "")}})

async def events(request):
    response = web.StreamResponse(headers={{"Content-Type": "text/event-stream"}})
    await response.prepare(request)
    for i in range(3):
        await response.write(f"data: {{i}}\\n\\n".encode())
        await asyncio.sleep(0.05)
    return response

async def healthz(request):
    return web.Response(text="ok")

async def main():
    app = web.Application()
    app.router.add_post("/hello", hello)
    app.router.add_get("/events", events)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    with open({ready!r} + ".tmp", "w") as f:
        json.dump({{"port": port}}, f)
    import os; os.replace({ready!r} + ".tmp", {ready!r})
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.fixture
def web_app(tmp_path: Path) -> Iterator[str]:
    ready = tmp_path / "web.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", WEB_APP.format(ready=str(ready))], env=child_env()
    )
    try:
        wait_for(lambda: ready.exists() or proc.poll() is not None, 30, "the web app")
        yield f"http://127.0.0.1:{json.loads(ready.read_text())['port']}"
    finally:
        proc.kill()
        proc.wait()


def test_http_passthrough_crosses_two_sidecars_and_streams(
    web_app: str, sidecars: Callable[..., Sidecar]
) -> None:
    front = sidecars("web", app=web_app, app_protocol="http")
    caller = sidecars("pipeline")
    base = f"http://{caller.info['http']}/svc/web"
    wait_for(lambda: front.admin("/readyz")[0] == 200, 20, "the web app's sidecar to be ready")

    def post() -> dict[str, str] | None:
        request = urllib.request.Request(f"{base}/hello?x=1", data=b"ping", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError:
            return None

    wait_for(lambda: post() is not None, 20, "the caller's sidecar to find the web service")
    answer = post()
    assert answer is not None
    assert answer["path"] == "/hello?x=1" and answer["body"] == "ping"
    assert answer["trace"].startswith("00-")  # created at the first hop, carried on
    with urllib.request.urlopen(f"{base}/events", timeout=5) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.read() == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    # A peer's mesh port relays HTTP only to its own app: never an open proxy.
    status, body = _http(f"http://{front.mesh}/svc/pipeline/x")
    assert status == 400 and "fronts 'web'" in body
    for sidecar in (front, caller):
        assert sidecar.stop() == 0


def _http(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


REGISTERED = """
from sidecar import serve
async def double(inputs):
    return {{"y": inputs["x"] * 2}}
serve(double, service="toy", ready_file={ready!r}, uds_path={uds!r},
      discovery="consul://{consul}")
"""


def test_proxyless_clients_find_serve_replicas_through_the_registry(
    serve_process: Callable[[str], ServeProcess], consul: str
) -> None:
    replicas = [serve_process(REGISTERED.replace("{consul}", consul)) for _ in range(2)]
    asyncio.run(_proxyless_calls(f"consul://{consul}"))
    for replica in replicas:
        assert replica.stop() == 0


async def _proxyless_calls(discovery: str) -> None:
    from sidecar import MeshClient

    async with MeshClient(discovery=discovery) as client:
        big = np.arange(1 << 18, dtype=np.float32)
        out = await client.infer("toy", {"x": big}, timeout=10)
        np.testing.assert_array_equal(out["y"], big * 2)
        stats = client.shm_stats()
        assert stats is not None and stats.bytes_copied >= big.nbytes  # same host: shm
        del out
        for i in range(20):
            assert (await client.infer("toy", {"x": np.array([i])}))["y"][0] == 2 * i
        cluster = await client._proxyless()
        assert len((await cluster.cluster("toy")).endpoints) == 2


SLOW = """
import time
from sidecar import serve
def slow(inputs):
    time.sleep(3)
    return {{"y": inputs["x"]}}
serve(slow, service="toy", ready_file={ready!r}, uds_path={uds!r})
"""


def test_a_second_sigterm_ends_the_drain_at_once(
    serve_process: Callable[[str], ServeProcess], sidecars: Callable[..., Sidecar]
) -> None:
    replica = serve_process(SLOW)
    front = sidecars("toy", app=_app(replica))
    wait_for(lambda: front.admin("/readyz")[0] == 200, 20, "the sidecar to be ready")
    outcome: list[object] = []

    def call() -> None:
        with BlockingMeshClient(front.mesh) as client:
            try:
                outcome.append(client.infer("toy", {"x": np.ones(2)}, timeout=20))
            except Exception as exc:  # collected and asserted below
                outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    wait_for(lambda: front.metric("arrowmesh_requests_in_flight") == 1, 10, "a request in flight")
    front.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: front.admin("/readyz")[0] == 503, 10, "the sidecar to stop being ready")
    started = time.monotonic()
    front.proc.send_signal(signal.SIGTERM)
    assert front.proc.wait(10) == 0
    assert time.monotonic() - started < 2.5  # not the 3 s the request still needed
    caller.join(20)
    assert len(outcome) == 1 and isinstance(outcome[0], Exception)
    assert replica.stop() == 0


STALLING = """
import asyncio
from sidecar import serve
async def stall(inputs):
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        with open({cancelled!r}, "w") as f:
            f.write("cancelled")
        raise
    return dict(inputs)
serve(stall, service="toy", ready_file={{ready!r}}, uds_path={{uds!r}})
"""


def test_a_deadline_expires_cleanly_on_every_hop(
    serve_process: Callable[[str], ServeProcess],
    sidecars: Callable[..., Sidecar],
    tmp_path: Path,
) -> None:
    from sidecar import DeadlineExceeded

    cancelled = tmp_path / "cancelled"
    replica = serve_process(STALLING.format(cancelled=str(cancelled)))
    front = sidecars("toy", app=_app(replica))
    caller = sidecars("pipeline")
    wait_for(lambda: front.admin("/readyz")[0] == 200, 20, "the sidecar to be ready")
    with BlockingMeshClient(caller.mesh) as client:
        # A first call opens the caller's cluster (and is itself cut by its deadline).
        wait_for(lambda: _reaches(client, cancelled), 20, "a call to reach the replica")
        cancelled.unlink()
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            client.infer("toy", {"x": np.ones(2)}, timeout=0.5)
        assert time.monotonic() - started < 2.0
    # The budget travelled with the request: the replica's handler was cancelled too.
    wait_for(cancelled.exists, 5, "the replica's handler to be cancelled")
    wait_for(lambda: front.metric("arrowmesh_requests_in_flight") == 0, 5, "nothing in flight")
    for sidecar in (front, caller):
        assert sidecar.stop() == 0
    assert replica.stop() == 0


def _reaches(client: BlockingMeshClient, cancelled: Path) -> bool:
    """One short call; True once the replica saw (and cancelled) one."""
    with contextlib.suppress(Exception):
        client.infer("toy", {"x": np.ones(1)}, timeout=0.3)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if cancelled.exists():
            return True
        time.sleep(0.02)
    return False


def test_sigterm_while_starting_is_a_clean_stop(tmp_path: Path) -> None:
    # Found in review: the signal handlers were installed after start-up (after the ready
    # file), so a SIGTERM during it — a registry that is slow to answer — killed the
    # process outright (exit -15, nothing deregistered or cleaned up).
    with socket.create_server(("127.0.0.1", 0)) as registry:  # accepts, never answers
        port = registry.getsockname()[1]
        ready, log = tmp_path / "ready.json", tmp_path / "sidecar.log"
        argv = [sys.executable, "-m", "sidecar", "run", "--service", "toy",
                "--discovery", f"consul://127.0.0.1:{port}", "--app", "tcp://127.0.0.1:1",
                "--mesh-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
                "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0",
                "--ready-file", str(ready), "--log-format", "text"]  # fmt: skip
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, env=child_env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            registry.settimeout(30)
            connection, _ = registry.accept()  # it is registering: inside start-up
            with connection:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(20) == 0, log.read_text()[-3000:]
            assert not ready.exists()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

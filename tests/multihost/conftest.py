"""The multi-host harness: docker-compose.yml's consul profile with each service on a network
"host" of its own, made of network namespaces on one bridge (tests/netns.py).

    host        runs, inside the host's network namespace                  shm directory
    consul      python -m tests.consul_emulator on ADDR:8500                 none
    caller      sidecar run --service pipeline (routes only; mesh on         the caller's
                127.0.0.1:7700) and the pipeline program (_caller.py)
    replica-k   the replica (_replica.py: serve() on 127.0.0.1:9000) and     replica-k's
                sidecar run --service embedder --id embedder-k
                --app tcp://127.0.0.1:9000 (mesh on 0.0.0.0:7700)

The processes of one host share its loopback and its shm directory, as containers with
`network_mode: service:...` and one tmpfs volume do; hosts share nothing but the bridge,
so a hop between hosts cannot use shared memory. Ports are fixed, as in compose: each
host has its own port space. Sidecars' admin listeners are on ADDR:7790. The test process
reaches nothing inside the namespaces (the root namespace has no route to 10.99.0.0/16):
the pipeline program, driven over its stdin and stdout (`Program`), makes the calls and
reads the other hosts' /metrics and /endpoints across the bridge.

`mesh` is module-scoped: the network and its processes are built once (about 3 s) and
removed after the module, whatever happened: processes stopped (SIGKILL after a grace
period), namespaces deleted, shm directories removed. `whole_mesh` gives each test the mesh
as built, restarting a replica host an earlier test killed.
"""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests import netns
from tests.conftest import ROOT, child_env, wait_for
from tests.netns import Host, Network

SERVICE: Final = "embedder"
REPLICAS: Final = 2
CONSUL_PORT: Final = 8500
MESH_PORT: Final = 7700
ADMIN_PORT: Final = 7790
APP_PORT: Final = 9000
START_TIMEOUT: Final = 30.0  # one process, from spawn to ready file, on a loaded 2-core CI
CALL_TIMEOUT: Final = 30.0
STOP_GRACE: Final = 5.0
SHM_ARENA_SIZE: Final = 16 << 20  # compose's size; the default 64 MiB costs more to pre-fault


@dataclass
class Proc:
    """A process started inside a host's namespace, with its log file."""

    name: str
    host: Host
    popen: subprocess.Popen[bytes]
    log: Path
    info: dict[str, Any] = field(default_factory=dict)  # its ready file, once read

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, size: int = 3000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.log.name} (last {size} chars) ---\n{text[-size:]}"

    def kill(self) -> None:
        if self.alive:
            self.popen.kill()
        self.popen.wait(STOP_GRACE)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then the exit code (SIGKILL and fail after `timeout`)."""
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} did not exit within {timeout} s of SIGTERM\n{self.tail()}")


@dataclass
class Sidecar:
    """A `sidecar run` process and what its ready file says."""

    proc: Proc

    @property
    def mesh(self) -> str:
        return str(self.proc.info["mesh"])

    @property
    def admin(self) -> str:
        return str(self.proc.info["admin"])

    @property
    def id(self) -> str:
        return str(self.proc.info["id"])


class Metrics:
    """One scrape of a sidecar's /metrics."""

    def __init__(self, text: str) -> None:
        self.samples = [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples called `name` whose labels include `labels`."""
        return sum(
            value
            for sample, have, value in self.samples
            if sample == name and all(have.get(k) == v for k, v in labels.items())
        )


class Call:
    """A command sent to a Program: its progress lines, then its result."""

    def __init__(self, program: Program, op: str, replies: queue.Queue[dict[str, Any] | None]):
        self.program = program
        self.op = op
        self.progress = 0
        self._replies = replies
        self._final: dict[str, Any] | None = None

    def wait_progress(self, count: int, timeout: float) -> None:
        """Until `count` answers were reported; fails if the command ends before."""
        deadline = time.monotonic() + timeout
        while self.progress < count:
            if self._final is not None:
                pytest.fail(f"{self.op} ended before {count} answers: {self._final}")
            self._take(deadline, f"{count} answers to {self.op}")

    def result(self, timeout: float = CALL_TIMEOUT) -> Any:
        """What the command returned; fails if it raised, or after `timeout`."""
        deadline = time.monotonic() + timeout
        while self._final is None:
            self._take(deadline, f"the result of {self.op}")
        if "error" in self._final:
            pytest.fail(f"{self.op} failed in the program: {self._final['error']}")
        return self._final["result"]

    def poll(self) -> int:
        """The answers reported so far, reading what has arrived without waiting."""
        while self._final is None:
            try:
                reply = self._replies.get_nowait()
            except queue.Empty:
                break
            self._handle(reply, "progress")
        return self.progress

    def _take(self, deadline: float, what: str) -> None:
        try:
            reply = self._replies.get(timeout=max(deadline - time.monotonic(), 0.0))
        except queue.Empty:
            pytest.fail(f"timed out waiting for {what}\n{self.program.proc.tail()}")
        self._handle(reply, what)

    def _handle(self, reply: dict[str, Any] | None, what: str) -> None:
        if reply is None:
            pytest.fail(f"the program exited while waiting for {what}\n{self.program.proc.tail()}")
        if "progress" in reply:
            self.progress = max(self.progress, int(reply["progress"]))
        else:
            self._final = reply


class Program:
    """The pipeline program (_caller.py) in one host, driven by JSON lines."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self._lock = threading.Lock()
        self._replies: dict[int, queue.Queue[dict[str, Any] | None]] = {0: queue.Queue()}
        self._next_id = 1
        self._ended = False
        self._reader = threading.Thread(target=self._read, name=f"read-{proc.name}", daemon=True)
        self._reader.start()

    def wait_ready(self) -> Program:
        """Until the program has imported everything and reads commands."""
        Call(self, "start", self._replies[0]).result(START_TIMEOUT)
        return self

    def send(self, op: str, **args: object) -> Call:
        """Start command `op`; its Call gives progress and result."""
        replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        with self._lock:
            ident, self._next_id = self._next_id, self._next_id + 1
            self._replies[ident] = replies
            if self._ended:
                replies.put(None)
        stdin = self.proc.popen.stdin
        assert stdin is not None
        with contextlib.suppress(BrokenPipeError):  # the Call reports the exit
            stdin.write(json.dumps({"id": ident, "op": op, **args}).encode() + b"\n")
            stdin.flush()
        return Call(self, op, replies)

    def call(self, op: str, *, wait: float = CALL_TIMEOUT, **args: object) -> Any:
        """Run command `op` to completion (at most `wait` seconds); its result."""
        return self.send(op, **args).result(wait)

    def infer(self, sidecar: Sidecar, count: int = 1, **args: object) -> dict[str, Any]:
        """`count` checked requests to the service through `sidecar`; ok / failed / errors."""
        args = {"service": SERVICE, "workers": 1, "elements": 4, "timeout": 10.0,
                "time_limit": 20.0, **args}  # fmt: skip
        result: dict[str, Any] = self.send(
            "infer", sidecar=sidecar.mesh, count=count, **args
        ).result()
        return result

    def get(self, url: str) -> tuple[int, str]:
        answer = self.call("http", method="GET", url=url)
        return int(answer["status"]), str(answer["text"])

    def close(self) -> None:
        """End of stdin: the program closes its clients and exits; killed if it lingers."""
        stdin = self.proc.popen.stdin
        with contextlib.suppress(OSError):
            if stdin is not None:
                stdin.close()
        try:
            self.proc.popen.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._reader.join(STOP_GRACE)
        stdout = self.proc.popen.stdout
        if stdout is not None:
            stdout.close()

    def _read(self) -> None:
        stdout = self.proc.popen.stdout
        assert stdout is not None
        for line in stdout:
            try:
                reply = json.loads(line)
                target = self._replies[int(reply["id"])]
            except (ValueError, KeyError, TypeError):
                continue  # not ours (a stray print): the log has the story
            target.put(reply)
        with self._lock:
            self._ended = True
            for replies in self._replies.values():
                replies.put(None)


class Mesh:
    """The hosts, their processes, and what the tests do to them."""

    def __init__(self, net: Network, workdir: Path) -> None:
        self.net = net
        self.workdir = workdir
        consul, caller, *replicas = net.hosts
        self.hosts: dict[str, Host] = {"consul": consul, "caller": caller}
        self.hosts.update({f"replica-{k}": h for k, h in enumerate(replicas, 1)})
        self.replica_names = tuple(f"replica-{k}" for k in range(1, len(replicas) + 1))
        self.consul_address = f"{consul.address}:{CONSUL_PORT}"
        tag = net.hub.split("-")[1]
        self.shm_dirs = {name: Path(f"/dev/shm/arrowmesh-mh-{tag}-{name}") for name in self.hosts}
        self.procs: list[Proc] = []
        self.emulator: Proc | None = None
        self.replicas: dict[str, Proc] = {}
        self.sidecars: dict[str, Sidecar] = {}
        self.programs: dict[str, Program] = {}

    # Building

    def start(self) -> None:
        """Every host's processes, in compose's order: Consul first, then the sidecars."""
        for path in self.shm_dirs.values():
            path.mkdir(mode=0o700)
        self.emulator = emulator = self.spawn("consul", "consul", [
            sys.executable, "-m", "tests.consul_emulator", "--host",
            self.hosts["consul"].address, "--port", str(CONSUL_PORT), "--ready-file",
            str(self.workdir / "consul.json"), "--reap-interval", "0.5",
            "--min-deregister-after", "1",
        ])  # fmt: skip
        for name in self.replica_names:
            self.replicas[name] = self._spawn_replica(name)
        self.programs["caller"] = Program(
            self.spawn("program-caller", "caller", _PROGRAM, pipes=True)
        )
        self.await_ready(emulator, self.workdir / "consul.json", "the consul emulator")
        self.sidecars["caller"] = self._spawn_sidecar("caller")
        for name in self.replica_names:
            self.sidecars[name] = self._spawn_sidecar(name)
        self.caller.wait_ready()
        for name in self.replica_names:
            self.await_ready(self.replicas[name], self._ready_file(self.replicas[name]), name)
        for sidecar in self.sidecars.values():
            self.await_sidecar(sidecar)
        self.wait_routable()

    def replica_flags(self, name: str, *, mdns: bool = False) -> list[str]:
        """`sidecar run` flags of the sidecar of replica host `name` (Consul or mDNS)."""
        k = name.rsplit("-", 1)[1]
        host = self.hosts[name]
        return [
            "--service", SERVICE, "--id", f"{SERVICE}-{k}{'-mdns' if mdns else ''}",
            "--app", f"tcp://127.0.0.1:{APP_PORT}", "--app-protocol", "mesh",
            "--discovery", "mdns://?interface=eth0" if mdns else f"consul://{self.consul_address}",
            "--mesh-addr", f"0.0.0.0:{MESH_PORT + 10 if mdns else MESH_PORT}",
            "--advertise-addr", host.address,
            *_local_listeners(host, offset=10 if mdns else 0),
        ]  # fmt: skip

    def caller_flags(self, *, mdns: bool = False) -> list[str]:
        """`sidecar run` flags of the caller host's sidecar, which fronts no app."""
        return [
            "--service", "pipeline",
            "--discovery", "mdns://?interface=eth0" if mdns else f"consul://{self.consul_address}",
            "--mesh-addr", f"127.0.0.1:{MESH_PORT + 10 if mdns else MESH_PORT}",
            *_local_listeners(self.hosts["caller"], offset=10 if mdns else 0),
        ]  # fmt: skip

    def spawn(self, name: str, host_name: str, argv: list[str], *, pipes: bool = False) -> Proc:
        """Start `argv` in host `host_name`, its output to a log file (or stdout piped)."""
        host = self.hosts[host_name]
        log = self.workdir / f"{name}.log"
        for n in range(1, 100):  # a restarted process keeps the earlier log
            if not log.exists():
                break
            log = self.workdir / f"{name}.{n}.log"
        env = child_env()
        for key in ("CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN"):
            env.pop(key, None)
        if host_name in self.shm_dirs:
            env["ARROWMESH_SHM_DIR"] = str(self.shm_dirs[host_name])
        env["ARROWMESH_SHM_ARENA_SIZE"] = str(SHM_ARENA_SIZE)
        with log.open("wb") as out:
            streams: dict[str, IO[bytes] | int] = (
                {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": out}
                if pipes
                else {"stdout": out, "stderr": subprocess.STDOUT}
            )
            popen = host.popen(argv, env=env, cwd=ROOT, **streams)
        proc = Proc(name, host, popen, log)
        self.procs.append(proc)
        return proc

    def start_sidecar(self, host_name: str, name: str, flags: list[str]) -> Sidecar:
        """Spawn `sidecar run` in a host (ready file not awaited: `await_sidecar`)."""
        ready = self.workdir / f"{name}.json"
        ready.unlink(missing_ok=True)
        argv = [
            sys.executable, "-m", "sidecar", "run", *flags, "--shm-dir",
            str(self.shm_dirs[host_name]), "--ready-file", str(ready),
            "--app-health-interval", "0.2", "--drain-timeout", "10", "--log-format", "text",
        ]  # fmt: skip
        return Sidecar(self.spawn(name, host_name, argv))

    def await_sidecar(self, sidecar: Sidecar) -> Sidecar:
        self.await_ready(sidecar.proc, self._ready_file(sidecar.proc), sidecar.proc.name)
        return sidecar

    def await_ready(self, proc: Proc, ready: Path, what: str) -> None:
        wait_for(lambda: ready.exists() or not proc.alive, START_TIMEOUT, f"{what} to be ready")
        if not proc.alive:
            pytest.fail(f"{what} exited with {proc.popen.returncode}\n{proc.tail()}")
        proc.info = json.loads(ready.read_text())

    def _ready_file(self, proc: Proc) -> Path:
        return self.workdir / f"{proc.name}.json"

    def _spawn_replica(self, name: str) -> Proc:
        ready = self.workdir / f"{name}.json"
        ready.unlink(missing_ok=True)
        return self.spawn(name, name, [*_REPLICA, SERVICE, str(APP_PORT), str(ready)])

    def _spawn_sidecar(self, host_name: str) -> Sidecar:
        """The Consul sidecar of host `host_name`, as the mesh is built."""
        flags = self.caller_flags() if host_name == "caller" else self.replica_flags(host_name)
        return self.start_sidecar(host_name, f"sidecar-{host_name}", flags)

    # Looking

    @property
    def caller(self) -> Program:
        """The pipeline program of the caller host."""
        return self.programs["caller"]

    def program(self, host_name: str) -> Program:
        """A pipeline program in host `host_name` (started on first use, about 1 s)."""
        if host_name not in self.programs:
            proc = self.spawn(f"program-{host_name}", host_name, _PROGRAM, pipes=True)
            self.programs[host_name] = Program(proc)
            self.programs[host_name].wait_ready()
        return self.programs[host_name]

    def metrics(self, sidecar: Sidecar) -> Metrics:
        status, text = self.caller.get(f"http://{sidecar.admin}/metrics")
        assert status == 200, text
        return Metrics(text)

    def endpoints(self, sidecar: Sidecar, service: str = SERVICE) -> tuple[list[str], bool]:
        """The ids `sidecar` routes `service` to, and whether its registry is unreachable."""
        status, text = self.caller.get(f"http://{sidecar.admin}/endpoints")
        assert status == 200, text
        cluster = json.loads(text).get(service, {"endpoints": [], "stale": False})
        return sorted(e["id"] for e in cluster["endpoints"]), bool(cluster["stale"])

    def served(self, sidecar: Sidecar, port: int = MESH_PORT) -> dict[str, float]:
        """Requests `sidecar` relayed with success to each replica host's sidecar on `port`
        (the metric names an endpoint by the address it dialled)."""
        metrics = self.metrics(sidecar)
        return {
            name: metrics.total("arrowmesh_requests_total", service=SERVICE,
                                endpoint=f"{self.hosts[name].address}:{port}", outcome="ok")
            for name in self.replica_names
        }  # fmt: skip

    def wait_routable(self, via: str = "caller", timeout: float = 30.0) -> None:
        """Until the sidecar of host `via` lists every replica and each has taken a request
        from it (so none is still ejected after an earlier test's faults)."""
        sidecar = self.sidecars[via]
        expected = sorted(self.sidecars[n].id for n in self.replica_names)
        start = self.served(sidecar)
        seen: list[object] = []

        def every_replica_serves() -> bool:
            result = self.caller.infer(sidecar, count=8, workers=2)  # may fail while waiting
            served = self.served(sidecar)
            ids, stale = self.endpoints(sidecar)
            seen[:] = [result, served, ids, stale]
            return ids == expected and all(served[n] > start[n] for n in self.replica_names)

        try:
            wait_for(every_replica_serves, timeout, f"the {via} sidecar to route to {expected}")
        except pytest.fail.Exception as exc:
            logs = "\n".join(p.tail(1500) for p in self.procs if "sidecar" in p.name)
            pytest.fail(f"{exc}; last seen (calls, served, listed, stale): {seen}\n{logs}")

    # Faults

    @contextlib.contextmanager
    def partitioned(self, name: str) -> Iterator[None]:
        """Host `name` cut off the bridge (its interface down) for the duration."""
        host = self.hosts[name]
        host.set_link(False)
        try:
            yield
        finally:
            host.set_link(True)

    def stuck_towards(self, name: str, address: str) -> bool:
        """True if a process of host `name` has a TCP connection to `address` (HOST:PORT)
        that is still connecting or has data sent and not acknowledged."""
        out = self.hosts[name].run(["ss", "-Htn", "state", "all", "dst", address])
        for line in out.splitlines():
            state, _recv_q, send_q, *_ = line.split()
            if state == "SYN-SENT" or int(send_q) > 0:
                return True
        return False

    def kill_host(self, name: str) -> None:
        """SIGKILL the replica of host `name` and its sidecar (no drain, no deregistration)."""
        self.sidecars[name].proc.kill()
        self.replicas[name].kill()

    def restore(self) -> None:
        """Restart the replica hosts whose processes are gone, and the caller's sidecar;
        wait until every replica is routable and serving.

        The caller's sidecar is restarted too because its balancer remembers the failures of
        the killed endpoint, which comes back under the same id and address: it would send
        it nothing for 10-40 s (until the failure penalty decays; see the module's report).
        """
        for proc in (self.emulator, self.caller.proc):
            if proc is None or not proc.alive:
                tail = "" if proc is None else f"{proc.name}: {proc.tail()}"
                pytest.fail(f"the mesh cannot be restored without Consul and the caller\n{tail}")
        down = [n for n in self.replica_names
                if not (self.replicas[n].alive and self.sidecars[n].proc.alive)]  # fmt: skip
        if not down and self.sidecars["caller"].proc.alive:
            return
        self.sidecars["caller"].proc.stop()
        for name in down:
            self.kill_host(name)
            self.replicas[name] = self._spawn_replica(name)
            self.sidecars[name] = self._spawn_sidecar(name)
        self.sidecars["caller"] = self._spawn_sidecar("caller")
        for name in down:
            self.await_ready(self.replicas[name], self._ready_file(self.replicas[name]), name)
        for sidecar in self.sidecars.values():
            if not sidecar.proc.info:
                self.await_sidecar(sidecar)
        self.wait_routable()

    # Removing

    def close(self) -> None:
        """Stop every process (SIGTERM, SIGKILL after a grace period); remove shm dirs.

        Each step runs even if an earlier one failed; tests/netns.py then kills whatever
        still runs in the namespaces, by pid, and deletes them."""
        try:
            for program in self.programs.values():
                program.close()
        finally:
            try:
                self._stop_all()
            finally:
                for path in self.shm_dirs.values():
                    shutil.rmtree(path, ignore_errors=True)

    def _stop_all(self) -> None:
        running = [p for p in self.procs if p.alive]
        for proc in running:
            proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for proc in running:
            try:
                proc.popen.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(STOP_GRACE)


_PROGRAM: Final = [sys.executable, "-m", "tests.multihost._caller"]
_REPLICA: Final = [sys.executable, "-m", "tests.multihost._replica"]


def _local_listeners(host: Host, offset: int = 0) -> list[str]:
    """Local HTTP and gRPC on loopback; admin on the host's address, for the program."""
    return [
        "--http-addr", f"127.0.0.1:{7701 + offset}", "--grpc-addr", f"127.0.0.1:{7702 + offset}",
        "--admin-addr", f"{host.address}:{ADMIN_PORT + offset}",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """Consul, a caller and REPLICAS replica hosts on a bridge, running; removed after the
    module even if a test failed. Skipped (saying why) where namespaces cannot be made."""
    if reason := netns.unavailable_reason():
        pytest.skip(f"no network namespaces: {reason}")
    with contextlib.ExitStack() as stack:
        try:
            net = stack.enter_context(netns.network(2 + REPLICAS))
        except netns.NetnsUnavailable as exc:
            pytest.skip(f"no network namespaces: {exc}")
        built = Mesh(net, tmp_path_factory.mktemp("multihost"))
        stack.callback(built.close)
        built.start()
        yield built


@pytest.fixture
def whole_mesh(mesh: Mesh) -> Mesh:
    """The mesh with every replica host running and routable (restarted if a test killed it)."""
    mesh.restore()
    return mesh

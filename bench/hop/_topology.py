"""The servers of one run, each a child process, and the routes a request can take.

Mesh protocol (the echo replica is `bench.peers._arrowmesh`, a `serve()` echo):

    direct        client → replica
    sidecar-1hop  client → the replica's sidecar (--app tcp://replica) → replica
    sidecar-2hop  client → a caller sidecar (no app) → the replica's sidecar → replica
    haproxy-1hop  client → HAProxy (mode tcp) → replica
    haproxy-2hop  client → HAProxy → HAProxy → replica

HTTP (`bench.hop._httpapp`, an aiohttp echo): direct; through its sidecar's local HTTP
listener (`/svc/web/echo`, the sidecar fronting the app with --app-protocol http); through
HAProxy in mode http.

Discovery is a static file. The caller sidecar's lists the replica's sidecar and is
written once that sidecar is ready (its mesh port and shared-memory domain are known
then); the sidecars that front an app get an empty one. The Consul emulator would put a
Python process with blocking-query watches and TTL check passes on the servers' CPU,
and give every sidecar periodic registry work inside the blocks whose CPU is counted;
with a static file a hop costs only the hop.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from bench._rundir import RunDir

from . import _haproxy
from ._children import Child, Children, child_env
from ._httpapp import ECHO_PATH

Via = Literal["direct", "sidecar", "haproxy"]
Section = Literal["mesh", "http", "large"]
SECTIONS: Final[tuple[Section, ...]] = ("mesh", "http", "large")

DIRECT: Final = "direct"
SIDECAR_1: Final = "sidecar-1hop"
SIDECAR_2: Final = "sidecar-2hop"
HAPROXY_1: Final = "haproxy-1hop"
HAPROXY_2: Final = "haproxy-2hop"
SERVICE: Final = "echo"  # what bench.peers._arrowmesh serves
HTTP_SERVICE: Final = "web"


@dataclass(frozen=True, slots=True)
class Route:
    """One way to the service: where a client connects, and whose CPU is counted.

    `hop_pids` are the proxies on the way (sidecars or HAProxies), `backend_pids` the
    server behind them; `url_path` is what an HTTP client posts to.
    """

    name: str
    via: Via
    hops: int
    address: str
    hop_pids: tuple[int, ...] = ()
    backend_pids: tuple[int, ...] = ()
    url_path: str = ""


@dataclass(frozen=True, slots=True)
class Topology:
    """The routes of each section, the admin addresses of the sidecars on the mesh routes,
    and what was left out."""

    routes: Mapping[Section, tuple[Route, ...]]
    sidecar_admin: Mapping[str, str]
    notes: tuple[str, ...]
    skipped: Mapping[tuple[Section, str], str]  # (section, route) -> why it is left out
    haproxy_version: str


@dataclass(slots=True)
class _Started:
    child: Child
    info: dict[str, object]

    def text(self, key: str) -> str:
        value = self.info.get(key)
        return value if isinstance(value, str) else ""


def start(
    sections: Sequence[Section], haproxy: str | None, running: Children, rundir: RunDir
) -> Topology:
    """Start the servers `sections` need, in dependency order. Raises ServerFailed."""
    work, shm = rundir.path, str(rundir.shm_dir)
    mesh_env = child_env({"ARROWMESH_SHM_DIR": shm})
    plain_env = child_env({"ARROWMESH_SHM_DIR": ""})
    need_mesh = "mesh" in sections or "large" in sections
    need_http = "http" in sections
    notes: list[str] = []
    skipped: dict[tuple[Section, str], str] = {}
    if haproxy is None:
        why = f"{_haproxy.PROGRAM} not found"
        notes.append(f"{why}: HAProxy peers skipped; {_haproxy.INSTALL_HINT}")
        for section in ("mesh", "http"):
            skipped.update({(section, HAPROXY_1): why, (section, HAPROXY_2): why})

    # 1. The servers behind every route.
    replica_child = app_child = None
    if need_mesh:
        replica_child = _python_server(
            running, "replica", "bench.peers._arrowmesh", work, shm, mesh_env
        )
    if need_http:
        app_child = _python_server(running, "http-app", "bench.hop._httpapp", work, "", plain_env)
    replica = None if replica_child is None else _ready(running, replica_child, work)
    app = None if app_child is None else _ready(running, app_child, work)

    # 2. What fronts them: the replica's sidecar, the app's sidecar, the HAProxies.
    empty = work / "discovery-empty.json"
    empty.write_text(json.dumps({"services": {}}))
    front_child = web_child = None
    proxies: dict[tuple[Section, str], tuple[Child, str]] = {}
    ports = iter(_haproxy.free_ports(3))  # distinct: taken together, released together
    if replica is not None:
        app_url = f"tcp://{replica.text('mesh')}"
        front_child = _sidecar(running, "sidecar-echo", SERVICE, empty, work, mesh_env, app_url)
        if haproxy is not None and "mesh" in sections:
            one = _proxy(
                running, haproxy, "haproxy-1", "tcp", next(ports), replica.text("mesh"), work
            )
            two = _proxy(running, haproxy, "haproxy-2", "tcp", next(ports), one[1], work)
            proxies["mesh", HAPROXY_1], proxies["mesh", HAPROXY_2] = one, two
    if app is not None:
        app_url = f"http://{app.text('address')}"
        web_child = _sidecar(
            running, "sidecar-web", HTTP_SERVICE, empty, work, plain_env, app_url, "http"
        )
        if haproxy is not None:
            proxies["http", HAPROXY_1] = _proxy(
                running, haproxy, "haproxy-http", "http", next(ports), app.text("address"), work
            )
    front = None if front_child is None else _ready_sidecar(running, front_child, work)
    web = None if web_child is None else _ready_sidecar(running, web_child, work)
    for child, address in proxies.values():
        running.wait_listening(child, address)

    # 3. The caller sidecar, once the replica's sidecar can be listed.
    caller = None
    if front is not None:
        listing = work / "discovery-caller.json"
        listing.write_text(json.dumps(_listing(SERVICE, front)))
        caller_child = _sidecar(running, "sidecar-caller", "caller", listing, work, mesh_env)
        caller = _ready(running, caller_child, work)

    routes: dict[Section, tuple[Route, ...]] = {}
    if replica is not None and front is not None and caller is not None:
        mesh = _mesh_routes(replica, front, caller, proxies)
        if "mesh" in sections:
            routes["mesh"] = mesh
        if "large" in sections:
            routes["large"] = tuple(r for r in mesh if r.name in (DIRECT, SIDECAR_2))
    if app is not None and web is not None:
        if not web.text("http"):
            why = 'no HTTP listener in this sidecar ("http": null in its ready file)'
            notes.append(f"{why}: the /svc/ passthrough route is skipped")
            skipped["http", SIDECAR_1] = why
        routes["http"] = _http_routes(app, web, proxies)
    # The sidecars the large tensors pass: their relayed-bytes counters are checked.
    admin = {s.child.name: s.text("admin") for s in (front, caller) if s is not None}
    version = _haproxy.version(haproxy) if haproxy is not None else ""
    return Topology(routes, admin, tuple(notes), skipped, version)


def _mesh_routes(
    replica: _Started,
    front: _Started,
    caller: _Started,
    proxies: Mapping[tuple[Section, str], tuple[Child, str]],
) -> tuple[Route, ...]:
    backend = (replica.child.pid,)
    sidecars = (caller.child.pid, front.child.pid)
    routes = [
        Route(DIRECT, "direct", 0, replica.text("mesh"), (), backend),
        Route(SIDECAR_1, "sidecar", 1, front.text("mesh"), sidecars[1:], backend),
        Route(SIDECAR_2, "sidecar", 2, caller.text("mesh"), sidecars, backend),
    ]
    if ("mesh", HAPROXY_2) in proxies:
        one, one_address = proxies["mesh", HAPROXY_1]
        two, two_address = proxies["mesh", HAPROXY_2]
        routes.append(Route(HAPROXY_1, "haproxy", 1, one_address, (one.pid,), backend))
        routes.append(Route(HAPROXY_2, "haproxy", 2, two_address, (two.pid, one.pid), backend))
    return tuple(routes)


def _http_routes(
    app: _Started, web: _Started, proxies: Mapping[tuple[Section, str], tuple[Child, str]]
) -> tuple[Route, ...]:
    backend = (app.child.pid,)
    routes = [Route(DIRECT, "direct", 0, app.text("address"), (), backend, ECHO_PATH)]
    if web.text("http"):
        passthrough = f"/svc/{HTTP_SERVICE}{ECHO_PATH}"
        routes.append(
            Route(SIDECAR_1, "sidecar", 1, web.text("http"), (web.child.pid,), backend, passthrough)
        )
    if ("http", HAPROXY_1) in proxies:
        child, address = proxies["http", HAPROXY_1]
        routes.append(Route(HAPROXY_1, "haproxy", 1, address, (child.pid,), backend, ECHO_PATH))
    return tuple(routes)


def _python_server(
    running: Children, name: str, module: str, work: Path, shm: str, env: Mapping[str, str]
) -> Child:
    # bench._child's argv: MODULE READY_FILE WORKDIR SHM_DIR SIZES PARENT; 4 KiB is the
    # only size that travels in the body (64 MiB goes by reference).
    ready = work / f"{name}.ready.json"
    argv = [sys.executable, "-m", "bench._child", module, str(ready), str(work), shm, "4096"]
    # bench._child checks that its parent is this process: the exec wrapper keeps its pid.
    return running.start(name, [*argv, str(os.getpid())], env)


def _ready(running: Children, child: Child, work: Path) -> _Started:
    return _Started(child, running.wait_ready_file(child, work / f"{child.name}.ready.json"))


def _ready_sidecar(running: Children, child: Child, work: Path) -> _Started:
    """Ready file written, and the app answers its probe (`/readyz` says 200)."""
    started = _ready(running, child, work)
    running.wait_http_ok(child, f"http://{started.text('admin')}/readyz")
    return started


def _sidecar(
    running: Children,
    name: str,
    service: str,
    discovery: Path,
    work: Path,
    env: Mapping[str, str],
    app: str | None = None,
    app_protocol: str = "mesh",
) -> Child:
    argv = [
        sys.executable, "-m", "sidecar", "run", "--service", service,
        "--discovery", f"static://{discovery}", "--advertise-addr", "127.0.0.1",
        "--mesh-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
        "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
        "--ready-file", str(work / f"{name}.ready.json"), "--drain-timeout", "2",
        "--log-level", "warning", "--log-format", "text",
    ]  # fmt: skip
    if app is not None:
        argv += ["--app", app, "--app-protocol", app_protocol]
    return running.start(name, argv, env)


def _proxy(
    running: Children,
    program: str,
    name: str,
    mode: _haproxy.Mode,
    port: int,
    upstream: str,
    work: Path,
) -> tuple[Child, str]:
    """A proxy on `port` to `upstream`: the child, and the address it listens on."""
    config = work / f"{name}.cfg"
    config.write_text(_haproxy.config(mode, port, upstream))
    child = running.start(name, _haproxy.argv(program, str(config)), child_env())
    return child, f"127.0.0.1:{port}"


def _listing(service: str, sidecar: _Started) -> dict[str, object]:
    host, _, port = sidecar.text("mesh").rpartition(":")
    endpoint = {
        "id": f"{service}-sidecar",
        "address": host,
        "port": int(port),
        "protocol": "mesh",
        "meta": {"shm_domain": sidecar.text("shm_domain")},
    }
    return {"services": {service: [endpoint]}}

"""Every command, variable and address in docker-compose.yml means what the CLI and the
example scripts take it to mean: each `sidecar run` line goes through `sidecar run`'s own
configuration loader (flags + environment, no listener started)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from discovery import ConsulUri, MdnsUri, parse_discovery_uri
from sidecar import ConfigError, Settings
from sidecar._config import env_name
from sidecar._settings import parse_host_port

from .stack import (
    compose,
    parse_script_args,
    profiles,
    service,
    services,
    strings_in,
    tmpfs_volumes,
)

pytestmark = pytest.mark.timeout(30)

SIDECARS = [s.name for s in services() if s.is_sidecar]
SCRIPTED = [s.name for s in services() if s.built_here and not s.is_sidecar]
LOOPBACK = ("127.0.0.1", "::1", "localhost")
# Bytes a process may need beside its arenas' data: each arena's lease table (about 132 KiB
# with 4096 slots) and the domain's token and lock files; rounded up generously.
_OVERHEAD_PER_ARENA = 1 << 20
_OVERHEAD_PER_PROCESS = 1 << 20


def test_nothing_needs_interpolation() -> None:
    # The checks below read the file as written; a ${VAR} would make them check the wrong value.
    assert not [s for s in strings_in(compose()) if "$" in s]


@pytest.mark.parametrize("profile", profiles())
def test_each_profile_runs_replicas_with_a_sidecar_each_and_a_pipeline(profile: str) -> None:
    ours = [s for s in services() if profile in s.profiles]
    fronting = [s for s in ours if s.is_sidecar and s.run_config().settings.app is not None]
    assert len(fronting) >= 2, f"profile {profile}: {len(fronting)} replica sidecars"
    assert len({s.network_owner for s in fronting}) == len(fronting)  # one sidecar per replica
    callers = {s.name for s in ours if s.is_sidecar and s.run_config().settings.app is None}
    assert any(s.network_owner in callers for s in ours), f"profile {profile}: no pipeline"


@pytest.mark.parametrize("name", SIDECARS)
def test_sidecar_command_and_environment_pass_the_cli_configuration_check(name: str) -> None:
    try:
        config = service(name).run_config()
    except ConfigError as exc:
        pytest.fail(f"`sidecar {' '.join(service(name).argv[1:])}` would exit 2: {exc}")
    assert config.settings.service is not None
    assert config.config_file is None  # no --config: nothing outside the file decides


def test_every_arrowmesh_variable_is_a_setting() -> None:
    known = {env_name(field) for field in Settings.model_fields}
    # `environment` holds the image's ENV too: the Dockerfile's variables are checked here.
    used = {k for s in services() for k in s.environment if k.startswith("ARROWMESH_")}
    assert used, "the stack sets no ARROWMESH_* variable"
    assert used <= known, f"not settings: {sorted(used - known)}"


@pytest.mark.parametrize("name", SCRIPTED)
def test_app_command_and_healthcheck_parse_with_their_script(name: str) -> None:
    s = service(name)
    parse_script_args(s.argv)
    test = s.healthcheck_test
    # Without a healthcheck of its own the container would inherit the image's /readyz probe,
    # which in a shared network namespace asks its sidecar: a replica would wait on itself.
    assert test is not None, f"{name} needs its own healthcheck"
    assert test[0] == "CMD", test
    assert parse_script_args(test[1:]).check


@pytest.mark.parametrize("name", SIDECARS)
def test_sidecar_reaches_its_app_in_the_network_namespace_it_shares(name: str) -> None:
    s = service(name)
    settings = s.run_config().settings
    if settings.app is None:
        return  # a caller's sidecar: it fronts no app
    owner = s.network_owner
    assert owner is not None, f"{name} fronts an app, so it shares that app's network namespace"
    assert s.depends_on.get(owner) == "service_healthy"
    url = urlsplit(settings.app)
    app = parse_script_args(service(owner).argv)
    assert (url.hostname, url.port) == ("127.0.0.1", app.port)
    assert settings.app_protocol == "mesh"
    # Peers dial the advertised name; it must lead to this network namespace.
    assert settings.advertise_addr in (None, owner)


@pytest.mark.parametrize("name", SCRIPTED)
def test_pipeline_calls_the_mesh_listener_of_the_sidecar_it_shares(name: str) -> None:
    s = service(name)
    args = parse_script_args(s.argv)
    if not hasattr(args, "sidecar"):
        return  # a model replica: called, not calling
    owner = s.network_owner
    assert owner is not None and service(owner).is_sidecar
    assert s.depends_on.get(owner) == "service_healthy"
    host, port = parse_host_port(service(owner).run_config().settings.mesh_addr)
    assert parse_host_port(args.sidecar) == (host if host in LOOPBACK else "127.0.0.1", port)
    # It calls the service the replicas of its profile front, after they are ready.
    fronted = {
        other.name
        for other in services()
        if other.is_sidecar
        and other.profiles == s.profiles
        and other.run_config().settings.service == args.service
    }
    assert fronted, f"no sidecar of profile {s.profiles} fronts {args.service!r}"
    assert fronted <= {d for d, c in s.depends_on.items() if c == "service_healthy"}


@pytest.mark.parametrize("name", SIDECARS)
def test_sidecar_discovery_works_inside_its_profile(name: str) -> None:
    s = service(name)
    uri = parse_discovery_uri(s.run_config().settings.discovery, {})
    if isinstance(uri, ConsulUri):
        assert uri.host in {o.name for o in services()}, f"no service {uri.host} runs Consul"
        agent = service(uri.host)
        assert agent.profiles == s.profiles, f"{uri.host} does not run with {name}"
        assert agent.healthcheck_test is not None
        assert s.depends_on.get(uri.host) == "service_healthy"
    else:
        assert isinstance(uri, MdnsUri), f"{name}: use consul or mdns discovery in compose"
        # Loopback multicast never leaves the container; name the compose network's interface.
        assert "lo" not in uri.interfaces
        images = [str(o.spec.get("image", "")) for o in services() if o.profiles == s.profiles]
        assert not [i for i in images if "consul" in i], f"{name}'s profile runs Consul"


def test_every_process_looks_for_shared_memory_where_the_tmpfs_volume_is() -> None:
    volumes = tmpfs_volumes()
    assert volumes, "no tmpfs volume for shared memory"
    for s in services():
        if not s.built_here:
            continue
        settings = s.run_config().settings if s.is_sidecar else s.app_settings().settings
        mounted = {v: target for v, target in s.mounts.items() if v in volumes}
        assert list(mounted.values()) == [settings.shm_dir], (
            f"{s.name}: shared-memory directory {settings.shm_dir!r}, tmpfs mounts {mounted}"
        )


def test_each_tmpfs_volume_holds_the_arenas_of_every_process_that_maps_it() -> None:
    # A process that touches arena pages a full tmpfs cannot hold dies of SIGBUS.
    for volume, size in tmpfs_volumes().items():
        users = [s for s in services() if volume in s.mounts]
        assert users, f"volume {volume} is mounted by no service"
        need = 0
        for s in users:
            settings = s.run_config().settings if s.is_sidecar else s.app_settings().settings
            arenas = settings.shm_max_bytes // settings.shm_arena_size
            need += settings.shm_max_bytes + arenas * _OVERHEAD_PER_ARENA + _OVERHEAD_PER_PROCESS
        assert need <= size, (
            f"volume {volume}: {size} bytes, its {len(users)} processes need {need}"
        )


def test_services_sharing_memory_share_a_profile() -> None:
    for volume in tmpfs_volumes():
        assert len({tuple(s.profiles) for s in services() if volume in s.mounts}) == 1, volume

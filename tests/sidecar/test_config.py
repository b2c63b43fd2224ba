"""`sidecar run` configuration: flags > ARROWMESH_* environment > YAML file, errors that name
the setting, and secrets that never show."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import ClassVar

import pydantic
import pytest
import yaml

from sidecar import ConfigError
from sidecar._config import (
    build_run_parser,
    load_run_config,
    load_run_settings,
    read_yaml_settings,
)
from sidecar._daemon import Daemon
from sidecar._settings import Settings, format_host_port, parse_host_port

# One bad value per setting, given as a flag. Settings that take any string are listed apart.
BAD: dict[str, str] = {
    "service": "bad/name",
    "id": "has space",
    "app_protocol": "smtp",
    "app": "ftp://127.0.0.1:21",
    "discovery": "etcd://127.0.0.1:2379",
    "mesh_addr": "nope",
    "http_addr": "127.0.0.1:99999",
    "grpc_addr": "::1:7702",
    "admin_addr": ":7790",
    "advertise_addr": "0.0.0.0",
    "drain_timeout": "0",
    "hello_timeout": "-1",
    "zone": "two words",
    "weight": "1000001",
    "capacity": "-1",
    "app_health_interval": "nan",
    "app_health_path": "healthz",
    "app_model": "two words",
    "app_encoding": "xml",
    "log_level": "verbose",
    "log_format": "xml",
    "max_message_size": "0",
    "max_header_size": "100",
    "max_tensors": "0",
    "max_rank": "zero",
    "inline_threshold": "-1",
    "chunk_size": "0",
    "max_concurrent_streams": "0",
    "shm_arena_size": "1",
    "shm_max_bytes": "1",
    "shm_lease_timeout": "-5",
    "shm_reap_interval": "inf",
    "balancer": "random",
    "max_attempts": "0",
    "retry_budget_ratio": "2",
    "queue_limit": "-1",
    "services": "{not json",
    "hedge": "perhaps",
    "eject_after": "-1",
    "max_ejected": "1.5",
    "trust_domain": "Upper.Case",
    "local_mesh_addr": "10.0.0.1:7703",
    "authorization": "{not json",
}
ANY_STRING = {"shm_dir", "config", "ready_file", "admin_token"}
TOGETHER = {"tls_cert", "tls_key", "tls_ca"}  # any path; wrong when one is given alone


def write_yaml(tmp_path: Path, data: object, name: str = "mesh.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def names_of(field: str) -> list[str]:
    return [f"--{field.replace('_', '-')}", f"ARROWMESH_{field.upper()}", f"{field} in YAML"]


def test_every_setting_has_a_bad_value_under_test() -> None:
    assert set(BAD) | ANY_STRING | TOGETHER == set(Settings.model_fields)


@pytest.mark.parametrize("field", sorted(TOGETHER))
def test_one_tls_file_alone_is_an_error_naming_all_three(field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_run_settings(["--service", "svc", names_of(field)[0], "/some/file.pem"], {})
    message = str(caught.value)
    assert "go together" in message
    for name in TOGETHER:
        assert all(spelling in message for spelling in names_of(name))


@pytest.mark.parametrize(
    ("field", "flag", "env", "file"),
    [
        ("mesh_addr", "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"),
        ("zone", "flagzone", "envzone", "filezone"),
        ("drain_timeout", "1.5", "2.5", 3.5),
        ("weight", "7", "8", 9),
        ("log_level", "debug", "warning", "error"),
    ],
)
def test_flags_win_over_environment_over_yaml(
    tmp_path: Path, field: str, flag: str, env: str, file: object
) -> None:
    flag_name, env_name, _ = names_of(field)
    path = write_yaml(tmp_path, {"service": "svc", field: file})
    argv = ["--config", path, flag_name, flag]
    environ = {env_name: env}

    assert str(getattr(load_run_settings(argv, environ), field)) == flag
    assert str(getattr(load_run_settings(argv[:2], environ), field)) == env
    assert str(getattr(load_run_settings(argv[:2], {}), field)) == str(file)


def test_origins_say_where_each_value_came_from(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, {"service": "from-file", "zone": "z-file", "weight": 5})
    config = load_run_config(
        ["--zone", "z-flag"], {"ARROWMESH_CONFIG": path, "ARROWMESH_WEIGHT": "6"}
    )
    assert config.settings.service == "from-file"
    assert config.settings.zone == "z-flag"
    assert config.settings.weight == 6
    assert config.config_file == path
    assert config.origins["zone"] == "flag"
    assert config.origins["weight"] == "env"
    assert config.origins["config"] == "env"
    assert config.origins["service"] == "file"
    assert config.origins["mesh_addr"] == "default"
    shown = config.redacted()
    assert json.loads(json.dumps(shown)) == shown


def test_the_yaml_file_comes_from_the_environment_when_no_flag_names_one(tmp_path: Path) -> None:
    from_env = write_yaml(tmp_path, {"service": "env-file"}, "env.yaml")
    from_flag = write_yaml(tmp_path, {"service": "flag-file"}, "flag.yaml")
    env = {"ARROWMESH_CONFIG": from_env}
    assert load_run_settings([], env).service == "env-file"
    assert load_run_settings(["--config", from_flag], env).service == "flag-file"


def test_yaml_keys_may_use_dashes(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path, {"service": "svc", "mesh-addr": "127.0.0.1:0", "log-format": "text"}
    )
    settings = load_run_settings(["--config", path], {})
    assert (settings.mesh_addr, settings.log_format) == ("127.0.0.1:0", "text")


def test_only_the_given_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARROWMESH_ZONE", "from-os-environ")  # conftest sets SHM_DIR there too
    settings = load_run_settings(["--service", "svc"], {})
    assert settings.zone == ""
    assert settings.shm_dir == Settings.model_fields["shm_dir"].default


def test_defaults_are_the_documented_listeners() -> None:
    settings = load_run_settings(["--service", "svc"], {})
    assert settings.mesh_addr == "0.0.0.0:7700"
    assert settings.http_addr == "127.0.0.1:7701"
    assert settings.grpc_addr == "127.0.0.1:7702"
    assert settings.admin_addr == "127.0.0.1:7790"
    assert (settings.app_protocol, settings.log_level, settings.log_format) == (
        "mesh",
        "info",
        "json",
    )


def test_an_empty_variable_means_unset_and_names_ignore_case() -> None:
    settings = load_run_settings(
        ["--service", "svc", "--log-level", "DEBUG"], {"ARROWMESH_APP": "", "arrowmesh_zone": "z"}
    )
    assert settings.app is None
    assert settings.zone == "z"
    assert settings.log_level == "debug"


@pytest.mark.parametrize("field", sorted(BAD))
def test_a_bad_flag_value_raises_config_error_naming_the_setting(field: str) -> None:
    flag = names_of(field)[0]
    argv = [flag, BAD[field]] if field == "service" else ["--service", "svc", flag, BAD[field]]
    with pytest.raises(ConfigError) as caught:
        load_run_settings(argv, {})
    message = str(caught.value)
    for name in names_of(field):
        assert name in message
    assert repr(BAD[field]) in message
    assert message.endswith(f"given by {flag}")


def test_a_bad_environment_value_names_the_variable_as_its_source() -> None:
    with pytest.raises(ConfigError, match=r"'-3'.*given by ARROWMESH_CAPACITY$"):
        load_run_settings(["--service", "svc"], {"ARROWMESH_CAPACITY": "-3"})


def test_a_bad_yaml_value_names_the_file_as_its_source(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, {"service": "svc", "weight": 0})
    with pytest.raises(ConfigError, match=rf"--weight .*given by weight in {path}$"):
        load_run_settings(["--config", path], {})


def test_limits_that_do_not_fit_together_name_both_settings() -> None:
    argv = ["--service", "svc", "--inline-threshold", "70000", "--max-header-size", "65536"]
    with pytest.raises(ConfigError) as caught:
        load_run_settings(argv, {})
    for name in ("--inline-threshold", "ARROWMESH_MAX_HEADER_SIZE", "max_header_size in YAML"):
        assert name in str(caught.value)


def test_every_bad_setting_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_run_settings(["--service", "svc", "--weight", "0", "--zone", "a b"], {})
    assert "--weight" in str(caught.value) and "--zone" in str(caught.value)


def test_a_missing_service_is_an_error_naming_every_spelling() -> None:
    with pytest.raises(ConfigError, match="is required") as caught:
        load_run_settings(["--zone", "z"], {"ARROWMESH_SERVICE": ""})
    for name in names_of("service"):
        assert name in str(caught.value)


def test_the_service_may_come_from_the_file_alone(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, {"service": "embedder"})
    assert load_run_settings([], {"ARROWMESH_CONFIG": path}).service == "embedder"


def test_an_unknown_yaml_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, {"service": "svc", "mesh_adr": "127.0.0.1:0"})
    with pytest.raises(ConfigError, match=r"unknown setting 'mesh_adr'.*did you mean 'mesh_addr'"):
        load_run_settings(["--config", path], {})


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"config": "other.yaml"}, "'config' cannot name another file"),
        ({"mesh_addr": "127.0.0.1:1", "mesh-addr": "127.0.0.1:2"}, "given twice"),
        (["service", "svc"], "must map setting names to values, not be a list"),
    ],
)
def test_a_yaml_file_of_the_wrong_shape_is_refused(tmp_path: Path, data: object, says: str) -> None:
    path = write_yaml(tmp_path, data)
    with pytest.raises(ConfigError, match=says):
        read_yaml_settings(path)


def test_a_missing_yaml_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match=rf"{path}.*does not exist"):
        load_run_settings(["--service", "svc"], {"ARROWMESH_CONFIG": path})


def test_a_yaml_file_that_does_not_parse_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("service: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"{path}.*is not valid YAML.*line"):
        load_run_settings(["--config", str(path)], {})


def test_a_directory_is_not_a_yaml_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_run_settings(["--config", str(tmp_path)], {})


def test_an_empty_yaml_file_sets_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_run_settings(["--service", "svc", "--config", str(path)], {}).zone == ""


@pytest.mark.parametrize(
    "argv",
    [["--service", "svc", "--no-such-flag", "1"], ["--serv", "svc"], ["--service"], ["extra"]],
)
def test_a_bad_command_line_raises_config_error(argv: list[str]) -> None:
    with pytest.raises(ConfigError, match=r"sidecar run: .*see sidecar run --help"):
        load_run_settings(argv, {})


def test_the_parser_has_a_documented_flag_for_every_setting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_run_parser()
    assert parser.prog == "sidecar run"
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for field in Settings.model_fields:
        flag, env, _ = names_of(field)
        assert flag in text and env in text
    for action in parser._actions:
        assert action.help, action.option_strings


@pytest.mark.parametrize(
    ("protocol", "app"),
    [
        ("mesh", "tcp://127.0.0.1:9000"),
        ("mesh", "unix:///run/app.sock"),
        ("http", "http://localhost:8000/base"),
        ("oip-http", "https://[::1]:8443"),
        ("oip-grpc", "grpc://triton:8001"),
    ],
)
def test_an_app_url_fitting_its_protocol_is_accepted(protocol: str, app: str) -> None:
    argv = ["--service", "svc", "--app-protocol", protocol, "--app", app]
    assert load_run_settings(argv, {}).app == app


@pytest.mark.parametrize(
    ("protocol", "app"),
    [
        ("mesh", "http://127.0.0.1:9000"),
        ("http", "tcp://127.0.0.1:9000"),
        ("oip-grpc", "grpc://:8001"),
        ("http", "http://host:99999"),
        ("mesh", "unix://"),
    ],
)
def test_an_app_url_not_fitting_its_protocol_is_refused(protocol: str, app: str) -> None:
    argv = ["--service", "svc", "--app-protocol", protocol, "--app", app]
    with pytest.raises(ConfigError, match=rf"--app .*speaking {protocol}; write e\.g\."):
        load_run_settings(argv, {})


@pytest.mark.parametrize(
    ("value", "host", "port"),
    [
        ("0.0.0.0:0", "0.0.0.0", 0),
        ("[::1]:7700", "::1", 7700),
        ("[::]:65535", "::", 65535),
        ("sidecar-1.mesh.local:7701", "sidecar-1.mesh.local", 7701),
    ],
)
def test_host_port_round_trips(value: str, host: str, port: int) -> None:
    assert parse_host_port(value) == (host, port)
    assert format_host_port(host, port) == value


@pytest.mark.parametrize(
    "value",
    [
        "nope",
        ":80",
        "host:",
        "host:65536",
        "::1:80",
        "[zz]:80",
        "host:-1",
        "host:\uff18\uff10",
        "a b:1",
    ],
)
def test_a_bad_host_port_raises_value_error_quoting_it(value: str) -> None:
    with pytest.raises(ValueError, match=repr(value).replace("[", r"\[").replace("]", r"\]")):
        parse_host_port(value)


def test_the_advertised_address_may_be_an_ipv6_literal() -> None:
    argv = ["--service", "svc", "--advertise-addr", "[fd00::1]"]
    assert load_run_settings(argv, {}).advertise_addr == "fd00::1"


# Secrets.

TOKEN = "s3cr3t-t0ken"


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (f"consul://{TOKEN}@consul:8500", "consul://***@consul:8500"),
        (f"consul://consul:8500?token={TOKEN}", "consul://consul:8500?token=***"),
        ("mdns://?interface=eth0", "mdns://?interface=eth0"),
        ("static:///etc/mesh.yaml", "static:///etc/mesh.yaml"),
    ],
)
def test_discovery_tokens_are_masked_in_the_redacted_settings(uri: str, shown: str) -> None:
    settings = load_run_settings(["--service", "svc", "--discovery", uri], {})
    assert settings.discovery == uri  # the daemon needs the real token
    redacted = settings.redacted()
    assert redacted["discovery"] == shown
    assert TOKEN not in json.dumps(redacted)


def test_app_credentials_are_masked_in_the_redacted_settings() -> None:
    app = f"http://user:{TOKEN}@127.0.0.1:8000/?api_key={TOKEN}&model=m"
    settings = Settings(app_protocol="http", app=app)
    assert settings.redacted()["app"] == "http://***@127.0.0.1:8000/?api_key=***&model=m"


def test_a_bad_discovery_uri_error_does_not_show_its_token() -> None:
    bad = f"consul://{TOKEN}@consul:8500?token={TOKEN}&nope=1"
    with pytest.raises(ConfigError, match="unknown parameter") as caught:
        load_run_settings(["--service", "svc"], {"ARROWMESH_DISCOVERY": bad})
    assert TOKEN not in str(caught.value)
    with pytest.raises(pydantic.ValidationError) as invalid:
        Settings(discovery=bad)
    assert TOKEN not in str(invalid.value)


class _WithSecret(Settings):
    SECRET_FIELDS: ClassVar[frozenset[str]] = frozenset({"consul_token"})
    consul_token: str = ""


def test_secret_fields_are_masked_whole() -> None:
    settings = _WithSecret(consul_token=TOKEN)
    assert settings.redacted()["consul_token"] == "***"
    assert _WithSecret().redacted()["consul_token"] == ""


def test_every_secret_sounding_setting_is_listed_as_secret() -> None:
    words = ("token", "secret", "password")
    sounding = {
        name
        for name in Settings.model_fields
        if any(w in name for w in words) and not name.endswith(("_path", "_file", "_dir"))
    }
    assert sounding <= Settings.SECRET_FIELDS


def test_library_settings_need_no_service() -> None:
    assert Settings().service is None


async def test_the_daemon_makes_its_arenas_with_the_flags_it_was_given(shm_dir: Path) -> None:
    # Found in review: the daemon's shared-memory domain was built from the environment
    # only, so --shm-arena-size (and the file's shm_* settings) did nothing in `sidecar run`.
    argv = ["--service", "embedder", "--shm-dir", str(shm_dir), "--shm-arena-size", str(2 << 20),
            "--mesh-addr", "127.0.0.1:0"]  # fmt: skip
    config = await asyncio.to_thread(load_run_config, argv, {})
    daemon = Daemon(config, {})
    try:
        domain = await daemon.shm.get()
        assert domain is not None and domain.stats().arena_bytes == 2 << 20
    finally:
        await daemon.aclose()

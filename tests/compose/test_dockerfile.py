"""The Dockerfile agrees with the CLI and the distribution: entrypoint, healthcheck, packages."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

from sidecar import Settings
from sidecar._admin import ROUTES
from sidecar._cli import main
from sidecar._settings import parse_host_port

from .stack import (
    DOCKERIGNORE,
    ROOT,
    copies,
    exec_form,
    final_stage,
    healthcheck,
    service,
    services,
    the,
)

pytestmark = pytest.mark.timeout(30)

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
_DURATION = re.compile(r"(\d+(ms|s|m|h))+")


def healthcheck_url() -> str:
    """The one URL the HEALTHCHECK's `python -c` program opens."""
    _, command = healthcheck()
    assert command[:2] == ["python", "-c"] and len(command) == 3, command
    program = command[2]
    ast.parse(program)  # a syntax error would make every probe fail: never healthy
    urls = re.findall(r"""['"](https?://[^'"]+)['"]""", program)
    assert len(urls) == 1, program
    return str(urls[0])


def test_entrypoint_is_the_sidecar_console_script() -> None:
    entrypoint = exec_form(the("ENTRYPOINT").args)
    assert entrypoint == ["sidecar"]
    assert PYPROJECT["project"]["scripts"]["sidecar"] == "sidecar._cli:run"


def test_default_command_is_one_the_cli_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    command = exec_form(the("CMD").args)
    assert main(command) == 0
    assert "usage: sidecar run" in capsys.readouterr().out


def test_healthcheck_probes_readyz_on_the_default_admin_listener() -> None:
    options, _ = healthcheck()
    assert set(options) <= {"interval", "timeout", "start-period", "retries"}
    assert all(_DURATION.fullmatch(v) for k, v in options.items() if k != "retries"), options
    url = re.fullmatch(r"http://([^/]+)(/.*)", healthcheck_url())
    assert url is not None
    assert url[2] == "/readyz" and url[2] in ROUTES
    default_host, default_port = parse_host_port(str(Settings.model_fields["admin_addr"].default))
    assert parse_host_port(url[1]) == (default_host, default_port)
    assert default_host == "127.0.0.1"  # the probe runs inside the container


@pytest.mark.parametrize(
    "name", [s.name for s in services() if s.is_sidecar and s.healthcheck_test is None]
)
def test_sidecar_without_its_own_healthcheck_keeps_the_admin_listener_the_image_probes(
    name: str,
) -> None:
    url = re.fullmatch(r"http://([^/]+)/.*", healthcheck_url())
    assert url is not None
    probed_host, probed_port = parse_host_port(url[1])
    host, port = parse_host_port(service(name).run_config().settings.admin_addr)
    assert port == probed_port
    assert host in (probed_host, "0.0.0.0", "::")


def test_image_runs_as_a_non_root_user() -> None:
    user = the("USER").args.partition(":")[0]
    assert user not in ("root", "0", "")
    # The user is made in the image with the fixed uid the tmpfs volumes are mounted for.
    assert any(i.keyword == "RUN" and "--uid 10001" in i.args for i in final_stage())


def test_base_is_a_slim_python_that_requires_python_allows() -> None:
    bases = {i.args.split()[0] for i in final_stage() if i.keyword == "FROM"}
    assert len(bases) == 1
    match = re.fullmatch(r"python:(\d+)\.(\d+)-slim(-\w+)?", bases.pop())
    assert match is not None
    floor = re.fullmatch(r">=(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert floor is not None
    assert (int(match[1]), int(match[2])) >= (int(floor[1]), int(floor[2]))


def test_the_wheel_is_built_from_every_package_of_the_distribution() -> None:
    copied = {Path(s).parts[0] for sources, _, stage in copies() if stage == 0 for s in sources}
    patterns = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*").split(".")[0] for pattern in patterns}
    assert packages | {"pyproject.toml", "README.md"} <= copied


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    # .dockerignore is an allowlist: each source copied must exist and be let in by name.
    allowed = {
        line[1:].rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    }
    assert DOCKERIGNORE.read_text(encoding="utf-8").splitlines().count("*") == 1
    for sources, _, _ in copies():
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source.rstrip("/") in allowed, f"{source} is not let in by .dockerignore"

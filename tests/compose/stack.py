"""The compose stack's files as data: docker-compose.yml, the Dockerfile and .dockerignore.

Only what the tests read is parsed. The Dockerfile parser joins continuation lines and
drops comments, which is all this Dockerfile needs (no heredocs, no `# escape=`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Final

import pytest
import yaml

from sidecar._config import RunConfig, load_run_config

ROOT: Final = Path(__file__).resolve().parents[2]
COMPOSE: Final = ROOT / "docker-compose.yml"
DOCKERFILE: Final = ROOT / "Dockerfile"
DOCKERIGNORE: Final = ROOT / ".dockerignore"
VALIDATOR: Final = ROOT.parent / "shared" / "compose" / "validate-compose"
IMAGE: Final = "arrowmesh:local"


# Dockerfile


@dataclass(frozen=True, slots=True)
class Instruction:
    """One Dockerfile instruction: keyword in upper case, its arguments, its stage (0-based)."""

    keyword: str
    args: str
    stage: int


@cache
def instructions() -> tuple[Instruction, ...]:
    """The Dockerfile's instructions, in order."""
    found: list[Instruction] = []
    stage = -1
    for line in _logical_lines(DOCKERFILE.read_text(encoding="utf-8")):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        stage += keyword == "FROM"
        found.append(Instruction(keyword, args.strip(), stage))
    return tuple(found)


def _logical_lines(text: str) -> Iterator[str]:
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments may sit between continuation lines, as Docker allows
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"


def final_stage() -> list[Instruction]:
    """The instructions of the stage that is built (the last one)."""
    last = instructions()[-1].stage
    return [i for i in instructions() if i.stage == last]


def the(keyword: str, stage: list[Instruction] | None = None) -> Instruction:
    """The one `keyword` instruction of `stage` (default: the final stage)."""
    found = [i for i in (final_stage() if stage is None else stage) if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the Dockerfile's stage, found {found}"
    return found[0]


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form ENTRYPOINT, CMD or HEALTHCHECK CMD."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(a, str) for a in value), args
    return [str(a) for a in value]


def healthcheck() -> tuple[dict[str, str], list[str]]:
    """The final stage's HEALTHCHECK: its `--option=value`s and its exec-form command."""
    options, sep, command = the("HEALTHCHECK").args.partition("CMD ")
    assert sep, "HEALTHCHECK has no CMD"
    pairs = (o.removeprefix("--").partition("=") for o in options.split())
    return {k: v for k, _, v in pairs}, exec_form(command)


def image_env() -> dict[str, str]:
    """The environment the final stage sets with ENV (KEY=VALUE form)."""
    env: dict[str, str] = {}
    for instruction in final_stage():
        if instruction.keyword == "ENV":
            for word in shlex.split(instruction.args):
                key, sep, value = word.partition("=")
                assert sep, f"ENV {instruction.args!r}: write KEY=VALUE"
                env[key] = value
    return env


def copies() -> list[tuple[list[str], str, int]]:
    """Every COPY from the build context: (sources, destination, stage)."""
    found = []
    for instruction in instructions():
        words = instruction.args.split()
        if instruction.keyword == "COPY" and not any(w.startswith("--from") for w in words):
            paths = [w for w in words if not w.startswith("--")]
            found.append((paths[:-1], paths[-1], instruction.stage))
    return found


def image_path(path: str) -> Path | None:
    """The file in the repository that the final stage copies to `path`, if any."""
    for sources, destination, stage in copies():
        if stage != final_stage()[0].stage or len(sources) != 1:
            continue
        if destination.endswith("/") and path.startswith(destination):
            return ROOT / sources[0] / path.removeprefix(destination)
    return None


# The example scripts the image runs


@cache
def script(path: str) -> ModuleType:
    """The example script at `path` in the image, loaded from the repository file copied there."""
    source = image_path(path)
    assert source is not None and source.is_file(), f"{path} is not copied into the image"
    spec = importlib.util.spec_from_file_location(f"compose_{source.stem}", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_script_args(argv: list[str]) -> argparse.Namespace:
    """`python SCRIPT ARGS...` parsed by SCRIPT's own parser; fails the test on bad arguments."""
    assert argv[:1] == ["python"] and len(argv) >= 2, f"not a python script: {argv}"
    parser = script(argv[1]).build_parser()
    assert isinstance(parser, argparse.ArgumentParser)
    try:
        return parser.parse_args(argv[2:])
    except SystemExit:
        pytest.fail(f"{argv[1]} rejects {argv[2:]} (see its usage above)")


# docker-compose.yml


@dataclass(frozen=True, slots=True)
class Service:
    """One compose service, with the parts the tests read given types."""

    name: str
    spec: Mapping[str, object]

    @property
    def profiles(self) -> list[str]:
        return _strings(self.spec.get("profiles", []), f"{self.name}.profiles")

    @property
    def built_here(self) -> bool:
        """Built from ./Dockerfile (so the image's entrypoint and HEALTHCHECK apply)."""
        return self.spec.get("build") in (".", {"context": "."})

    @property
    def argv(self) -> list[str]:
        """The process the container runs: entrypoint (compose's or the image's) + command."""
        if "entrypoint" in self.spec:
            entrypoint = _strings(self.spec["entrypoint"], f"{self.name}.entrypoint")
        elif self.built_here:
            entrypoint = exec_form(the("ENTRYPOINT").args)
        else:
            entrypoint = []  # another image's: unknown offline
        return entrypoint + _strings(self.spec.get("command", []), f"{self.name}.command")

    @property
    def is_sidecar(self) -> bool:
        return self.built_here and self.argv[:1] == ["sidecar"]

    @property
    def environment(self) -> dict[str, str]:
        """What the container's environment gets: the image's ENV, then compose's."""
        base = image_env() if self.built_here else {}
        given = self.spec.get("environment", {})
        assert isinstance(given, dict), f"{self.name}.environment: use the mapping form"
        # Compose passes numbers and booleans as their YAML text; a bare `KEY:` takes the
        # host's value, unknown offline, so it is left out.
        return base | {
            str(k): str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in given.items()
            if v is not None
        }

    @property
    def healthcheck_test(self) -> list[str] | None:
        check = self.spec.get("healthcheck")
        if not isinstance(check, dict) or "test" not in check:
            return None
        return _strings(check["test"], f"{self.name}.healthcheck.test")

    @property
    def network_owner(self) -> str | None:
        """X of `network_mode: service:X`: whose network namespace this one shares."""
        mode = str(self.spec.get("network_mode", ""))
        return mode.removeprefix("service:") if mode.startswith("service:") else None

    @property
    def mounts(self) -> dict[str, str]:
        """Named-volume mounts in short syntax: volume name -> container path."""
        found = {}
        for entry in _strings(self.spec.get("volumes", []), f"{self.name}.volumes"):
            source, _, target = entry.partition(":")
            found[source] = target.partition(":")[0]
        return found

    @property
    def depends_on(self) -> dict[str, str]:
        """Dependency -> condition."""
        given = self.spec.get("depends_on", {})
        assert isinstance(given, dict), f"{self.name}.depends_on: use the long form"
        return {str(k): str(v.get("condition", "service_started")) for k, v in given.items()}

    def run_config(self) -> RunConfig:
        """This sidecar's settings, loaded by `sidecar run`'s own loader (no listener starts).

        Raises sidecar.ConfigError as `sidecar run` would, before exiting 2.
        """
        assert self.is_sidecar and self.argv[1:2] == ["run"], f"{self.name} is no `sidecar run`"
        return load_run_config(self.argv[2:], self.environment)

    def app_settings(self) -> RunConfig:
        """The settings an arrowmesh library process here reads (from the environment alone)."""
        return load_run_config(["--service", self.name], self.environment)


@cache
def compose() -> dict[str, object]:
    """docker-compose.yml, loaded (anchors and `<<` merge keys resolved)."""
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def services() -> list[Service]:
    """Every service, in file order."""
    given = compose()["services"]
    assert isinstance(given, dict)
    return [Service(str(name), spec) for name, spec in given.items()]


def service(name: str) -> Service:
    """The service called `name`."""
    return next(s for s in services() if s.name == name)


def profiles() -> list[str]:
    """Every profile some service belongs to, sorted."""
    return sorted({p for s in services() for p in s.profiles})


def tmpfs_volumes() -> dict[str, int]:
    """Top-level volumes backed by tmpfs: name -> size in bytes (from `o: size=...`)."""
    found = {}
    volumes = compose().get("volumes") or {}
    assert isinstance(volumes, dict)
    for name, spec in volumes.items():
        opts = (spec or {}).get("driver_opts", {})
        if opts.get("type") == "tmpfs":
            options = dict(o.partition("=")[::2] for o in str(opts.get("o", "")).split(","))
            assert "size" in options, f"volume {name}: a tmpfs volume needs a size= option"
            found[str(name)] = parse_size(options["size"])
    return found


def parse_size(text: str) -> int:
    """Bytes of a mount size such as `320m` (k, m, g: powers of 1024)."""
    match = re.fullmatch(r"(\d+)([kmg]?)", text.lower())
    assert match, f"{text!r} is not a size like 320m"
    return int(match[1]) << {"": 0, "k": 10, "m": 20, "g": 30}[match[2]]


def strings_in(value: object) -> Iterator[str]:
    """Every string anywhere inside a loaded YAML value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings_in(k)
            yield from strings_in(v)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def _strings(value: object, where: str) -> list[str]:
    assert isinstance(value, list), f"{where}: write a list (exec form), not {value!r}"
    return [str(item) for item in value]

"""`sidecar run`'s configuration: flags win over `ARROWMESH_*` variables over the YAML file.

    ConfigError (MeshError, ValueError)   a setting is missing, unknown or has a bad value

Every `Settings` field is one setting, spelled three ways: `--mesh-addr` (flag),
`ARROWMESH_MESH_ADDR` (environment) and `mesh_addr` (YAML key; `mesh-addr` works too). The
merge is pydantic-settings': one source per place, first source wins per field. Errors name
the setting all three ways, so the user finds it whichever way they wrote it.
"""

from __future__ import annotations

import argparse
import difflib
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, NoReturn, get_args, get_origin

import pydantic
import pydantic_core
import yaml
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsError,
)
from pydantic_settings.sources.utils import parse_env_vars

from discovery._yaml import load_bounded

from ._errors import ConfigError
from ._settings import MASK, Origin, Settings, build_settings, redact_uri


@dataclass(frozen=True, slots=True)
class RunConfig:
    """The settings of `sidecar run` and where each value came from."""

    settings: Settings
    origins: Mapping[str, Origin]
    config_file: str | None = None

    def redacted(self) -> dict[str, object]:
        """JSON-ready `{"settings": ..., "origins": ...}`, secrets masked (for `/config`)."""
        return {"settings": self.settings.redacted(), "origins": dict(self.origins)}


_ORIGINS: Final[tuple[Origin, ...]] = ("flag", "env", "file")
_METAVARS: Final = {
    "service": "NAME",
    "id": "ID",
    "app": "URL",
    "discovery": "URI",
    "shm_dir": "DIR",
    "advertise_addr": "HOST",
    "config": "FILE.yaml",
    "ready_file": "PATH",
    "zone": "ZONE",
    "app_health_path": "PATH",
    "app_model": "MODEL",
}


def flag_name(field: str) -> str:
    """`--mesh-addr` for `mesh_addr`."""
    return "--" + field.replace("_", "-")


def env_name(field: str) -> str:
    """`ARROWMESH_MESH_ADDR` for `mesh_addr`."""
    return "ARROWMESH_" + field.upper()


def setting_names(field: str) -> str:
    """`--mesh-addr (ARROWMESH_MESH_ADDR, mesh_addr in YAML)`: every way to write a setting."""
    return f"{flag_name(field)} ({env_name(field)}, {field} in YAML)"


class _RunParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # Bad flags are bad configuration like any other: the caller decides the exit.
        raise ConfigError(f"sidecar run: {message} (see sidecar run --help)")


def build_run_parser() -> argparse.ArgumentParser:
    """The `sidecar run` flags, one per setting; absent flags are absent from the namespace.

    `parse_args` raises ConfigError on a bad command line (SystemExit(0) for --help).
    """
    parser = _RunParser(
        prog="sidecar run",
        description="Run the sidecar: front one local app, register it and route mesh traffic."
        " Every flag has an ARROWMESH_<FLAG> environment twin and a key in the --config"
        " YAML file; flags win over the environment over the file.",
        allow_abbrev=False,  # a prefix that works today would break when a flag is added
        argument_default=argparse.SUPPRESS,  # so only given flags reach the settings
    )
    for name, field in Settings.model_fields.items():
        parser.add_argument(
            flag_name(name), dest=name, metavar=_metavar(name, field.annotation), help=_help(name)
        )
    return parser


def _metavar(name: str, annotation: object) -> str:
    if get_origin(annotation) is Literal:
        return "{" + ",".join(str(a) for a in get_args(annotation)) + "}"
    if name.endswith("_addr") and name not in _METAVARS:
        return "HOST:PORT"
    if annotation is float:
        return "SECONDS"
    return _METAVARS.get(name, "N" if annotation is int else "VALUE")


def _help(name: str) -> str:
    field = Settings.model_fields[name]
    default = "" if field.default in (None, "") else f"; default {field.default}"
    return f"{field.description} [{env_name(name)}{default}]".replace("%", "%%")


class _MappingEnvSource(EnvSettingsSource):
    """`ARROWMESH_*` variables from a given mapping, not `os.environ` (tests pass their own)."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._env = env  # before super().__init__, which loads the variables
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._env, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


def load_run_config(argv: list[str], env: Mapping[str, str]) -> RunConfig:
    """The settings of `sidecar run` from its arguments, `env` and the YAML file they name.

    Blocking (reads the file). Raises ConfigError naming the setting, file or flag at fault.
    """
    flags: dict[str, object] = vars(build_run_parser().parse_args(argv))
    env_source = _MappingEnvSource(Settings, env)
    path = flags["config"] if "config" in flags else env_source.env_vars.get("arrowmesh_config")
    config_file = path if isinstance(path, str) and path.strip() else None
    yaml_values = read_yaml_settings(config_file) if config_file else {}
    # The file's values go in as init values: YamlConfigSettingsSource skips a missing file
    # silently and cannot name an unknown key.
    sources = (
        InitSettingsSource(Settings, flags),
        env_source,
        InitSettingsSource(Settings, yaml_values),
    )
    try:
        origins = _origins(sources)
    except SettingsError as exc:  # a JSON setting in the environment that is not JSON
        field = re.search(r'field "(\w+)"', str(exc))
        name = setting_names(field.group(1)) if field else "an ARROWMESH_* variable"
        raise ConfigError(f"invalid {name}: its value is not JSON") from None
    try:
        settings = build_settings(lambda _cls: sources)
    except pydantic.ValidationError as exc:
        raise ConfigError(_explain(exc, origins, config_file)) from None
    if settings.service is None:
        raise ConfigError(
            f"{setting_names('service')} is required: name the service this sidecar fronts,"
            " e.g. --service embedder"
        )
    return RunConfig(settings, origins, config_file)


def _origins(sources: tuple[PydanticBaseSettingsSource, ...]) -> dict[str, Origin]:
    found = [source() for source in sources]  # each source's values, by field name
    return {
        name: next(
            (o for o, values in zip(_ORIGINS, found, strict=True) if name in values), "default"
        )
        for name in Settings.model_fields
    }


def load_run_settings(argv: list[str], env: Mapping[str, str]) -> Settings:
    """The settings of `sidecar run`: flags > `ARROWMESH_*` in `env` > the YAML file.

    Blocking (reads the file). Raises ConfigError naming the setting, file or flag at fault.
    """
    return load_run_config(argv, env).settings


def read_yaml_settings(path: str) -> dict[str, object]:
    """The settings a YAML file holds, keys as field names (dashes become underscores).

    Blocking. Raises ConfigError naming the file, and the key if one is unknown.
    """
    data = _parse_yaml(path)
    values: dict[str, object] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name == "config":
            raise ConfigError(f"config file {path!r}: 'config' cannot name another file")
        if name not in Settings.model_fields:
            raise ConfigError(f"config file {path!r}: unknown setting {key!r}{_suggest(name)}")
        if name in values:
            raise ConfigError(f"config file {path!r}: setting {name!r} is given twice")
        values[name] = value
    return values


def _parse_yaml(path: str) -> dict[object, object]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path!r} (--config, ARROWMESH_CONFIG) does not exist"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: a NUL in the path
        raise ConfigError(f"config file {path!r} cannot be read: {exc}") from None
    try:
        data = load_bounded(text)
    except (yaml.YAMLError, ValueError, AttributeError) as exc:
        # PyYAML raises ValueError/AttributeError for some scalars (`2001-02-30`, `!!int '0x'`).
        detail = " ".join(str(exc).split())[:300]
        raise ConfigError(f"config file {path!r} is not valid YAML: {detail}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path!r} must map setting names to values, not be a {type(data).__name__}"
        )
    return data


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, Settings.model_fields, n=1)
    return f"; did you mean {close[0]!r}?" if close else " (see sidecar run --help)"


def _explain(exc: pydantic.ValidationError, origins: Mapping[str, Origin], path: str | None) -> str:
    return "\n".join(_explain_one(error, origins, path) for error in exc.errors(include_url=False))


def _explain_one(
    error: pydantic_core.ErrorDetails, origins: Mapping[str, Origin], path: str | None
) -> str:
    msg = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:  # a check across settings (transport limits, TLS files)
        named = [
            n
            for n in Settings.model_fields
            if re.search(rf"\b{n}\b|--{n.replace('_', '-')}\b", msg)
        ]
        return f"invalid settings: {msg} ({'; '.join(setting_names(n) for n in named)})"
    name = str(error["loc"][0])
    if error["type"] != "value_error":  # our own checks quote the value already
        msg = f"{_shown(name, error['input'])}: {msg[:1].lower()}{msg[1:]}"
    return f"invalid {setting_names(name)}: {msg}{_given_by(name, origins, path)}"


def _shown(name: str, value: object) -> str:
    if name in Settings.SECRET_FIELDS:
        return MASK
    if name in Settings.URI_FIELDS and isinstance(value, str):
        return repr(redact_uri(value))
    return _REPR.repr(value)  # bounded: a value from YAML may be a deep structure


def _bounded_repr() -> reprlib.Repr:
    shown = reprlib.Repr()  # Python 3.11 takes no limits in the constructor
    shown.maxlevel, shown.maxlist, shown.maxdict = 3, 6, 6
    shown.maxstring = shown.maxother = 200
    return shown


_REPR: Final = _bounded_repr()


def _given_by(name: str, origins: Mapping[str, Origin], path: str | None) -> str:
    where = {
        "flag": flag_name(name),
        "env": env_name(name),
        "file": f"{name} in {path}",
    }.get(origins.get(name, "default"))
    return f"; given by {where}" if where else ""

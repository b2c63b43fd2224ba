"""`sidecar run`'s settings loader: random flags, `ARROWMESH_*` variables and YAML files give
settings or a ConfigError naming the setting (exit code 2), never anything else.

The fields come from `Settings.model_fields`, so a setting added later is fuzzed too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pydantic_settings
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from sidecar import ConfigError
from sidecar._config import env_name, flag_name, load_run_config
from sidecar._settings import Settings

from . import _budget
from ._budget import event
from ._strategies import rarely
from ._yaml import alias_bomb, raised_by_yaml_constructor, tricky_scalars

pytestmark = pytest.mark.timeout(_budget.timeout())

FIELDS = sorted(set(Settings.model_fields) - {"config", "service"})
# Fields pydantic-settings decodes as JSON when they come from the environment.
JSON_FIELDS = frozenset(
    n
    for n, f in Settings.model_fields.items()
    if "dict" in str(f.annotation) or "list" in str(f.annotation)
)

texts = st.sampled_from(
    ["", " ", "0", "1", "-1", "1.5", "1e999", "nan", "inf", "true", "False", "yes", "9" * 40,
     "127.0.0.1:0", "[::1]:7700", "0.0.0.0:99999", "host:-1", ":", "[::1", "localhost:7701",
     "consul://tok@127.0.0.1:8500", "mdns://?interface=lo", "static:///m.yaml", "static://x",
     "http://127.0.0.1:8000", "tcp://h:1", "unix:///s.sock", "grpc://h:1", "mesh", "http",
     "oip-grpc", "peak_ewma", "RING_HASH", "debug", "JSON", "/healthz", "healthz", "a" * 300,
     '{"embedder": {"balancer": "round_robin"}}', '{"x": {"max_attempts": 0}}', "[1, 2]",
     "{bad", "{}", "null", "spiffe://td/service/x", "/no/such/file.pem", "zone-a", "é", "\x7f"]
) | st.text(max_size=12)  # fmt: skip
yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=5,
)
fields = st.sampled_from(FIELDS)


@dataclass
class Sources:
    argv: list[str]
    env: dict[str, str]
    yaml_text: str | None
    named: set[str]  # the settings these sources set


@st.composite
def sources(draw: st.DrawFn) -> Sources:
    named: set[str] = set()
    argv: list[str] = []
    if draw(rarely(st.just(True), st.just(False), 6)):
        argv += ["--service", draw(rarely(st.just("embedder"), texts, 8))]
        named.add("service")
    for name in draw(st.lists(fields, max_size=3)):
        argv += [flag_name(name), draw(texts)]
        named.add(name)
    env: dict[str, str] = {}
    for name in draw(st.lists(fields, max_size=3)):
        key = draw(rarely(st.just(env_name(name)), st.just(env_name(name).lower()), 4))
        env[key] = draw(texts)
        named.add(name)
    yaml_text = None
    if draw(st.booleans()):
        document = {}
        for name in draw(
            st.lists(fields | st.sampled_from(["unknown", "mesh-addr", "config"]), max_size=3)
        ):
            document[draw(rarely(st.just(name), st.just(name.replace("_", "-")), 4))] = draw(
                yaml_values
            )
            named.add(name.replace("-", "_"))
        yaml_text = yaml.safe_dump(document)
        if draw(rarely(st.just(False), st.just(True), 4)):
            at = draw(st.integers(0, len(yaml_text)))
            yaml_text = yaml_text[:at] + draw(tricky_scalars) + yaml_text[at:]
        yaml_text = draw(rarely(st.just(yaml_text), st.text(max_size=40), 8))
    return Sources(argv, env, yaml_text, named)


def _names_of(field: str) -> tuple[str, ...]:
    return (flag_name(field), env_name(field), field, field.replace("_", "-"))


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return tmp_path / "sidecar.yaml"


def test_random_flags_env_and_yaml_give_settings_or_a_config_error_naming_one(
    config_path: Path,
) -> None:
    @_budget.fuzz(examples=150)
    @given(sources())
    def load(src: Sources) -> None:
        argv = list(src.argv)
        if src.yaml_text is not None:
            config_path.write_text(src.yaml_text)
            argv += ["--config", str(config_path)]
        try:
            config = load_run_config(argv, src.env)
        except ConfigError as exc:
            message = str(exc)
            event(f"refused: {message[:24]}")
            named = [n for f in src.named | {"service"} for n in _names_of(f)]  # it is required
            assert (
                any(n in message for n in named)
                or str(config_path) in message
                or (
                    "sidecar run:" in message  # argparse: the flag it could not take is quoted
                )
            ), f"ConfigError names no setting that was given: {message[:400]}"
            return
        except pydantic_settings.SettingsError:
            # The finding pinned below: JSON settings from the environment.
            assert src.named & JSON_FIELDS, (
                "SettingsError without a JSON setting in the environment"
            )
            event("finding: SettingsError escaped")
            return
        except (ValueError, AttributeError) as exc:
            if not raised_by_yaml_constructor(exc):
                raise
            event("finding: PyYAML constructor error escaped")
            return
        event("accepted")
        assert config.settings.service is not None
        json.dumps(config.redacted())  # what /config serves must serialize

    load()


# Regressions for what the fuzzer found.


# Found by fuzzing; fixed.
@pytest.mark.parametrize("field", sorted(JSON_FIELDS))
def test_a_json_setting_from_the_environment_that_is_not_json_is_a_config_error(field: str) -> None:
    with pytest.raises(ConfigError, match=env_name(field)):
        load_run_config(["--service", "embedder"], {env_name(field): "{bad"})


# Found by fuzzing; fixed.
@pytest.mark.parametrize(
    "text", ["zone: 2001-02-30\n", "zone: !!timestamp x\n", "weight: !!int '0x'\n"]
)
def test_a_yaml_scalar_pyyaml_cannot_construct_is_a_config_error(
    config_path: Path, text: str
) -> None:
    config_path.write_text(text)
    with pytest.raises(ConfigError, match=r"sidecar\.yaml"):
        load_run_config(["--service", "embedder", "--config", str(config_path)], {})


def test_a_config_path_with_a_nul_byte_is_a_config_error() -> None:
    # Was a finding: Path.read_text's ValueError('embedded null byte') escaped _parse_yaml.
    with pytest.raises(ConfigError, match="config"):
        load_run_config(["--service", "embedder", "--config", "mesh\0.yaml"], {})


@pytest.mark.parametrize("levels", [4, 6, 12])
def test_nested_yaml_aliases_do_not_expand_into_the_error(config_path: Path, levels: int) -> None:
    # Was a finding: the ConfigError quoted the value with repr(), so a 300-byte file of
    # nested aliases made a multi-megabyte message (8**levels strings; 12 levels: a hang).
    # Now documents past 100,000 expanded values are refused before they are built, and
    # values are quoted in brief.
    config_path.write_text(alias_bomb(levels, "zone"))
    assert config_path.stat().st_size < 600
    with pytest.raises(ConfigError) as info:
        load_run_config(["--service", "embedder", "--config", str(config_path)], {})
    assert len(str(info.value)) < 2000
    if levels > 5:
        assert "aliases" in str(info.value)


def test_a_yaml_alias_cycle_is_a_config_error(config_path: Path) -> None:
    config_path.write_text("zone: &a [x, *a]\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_run_config(["--service", "embedder", "--config", str(config_path)], {})

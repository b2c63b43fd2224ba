"""Routing settings: defaults and per-service overrides, from YAML or a flag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sidecar import ConfigError
from sidecar._admission import queue_limit_of
from sidecar._config import load_run_settings
from sidecar._router import policy_from_settings


def test_per_service_overrides_win_over_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text(
        "balancer: least_request\nmax_attempts: 2\n"
        "services:\n  embedder: {balancer: ring_hash, retry_budget_ratio: 0.5}\n"
    )
    settings = load_run_settings(["--service", "x", "--config", str(path)], {})
    policy = policy_from_settings(settings)
    embedder, other = policy("embedder"), policy("ranker")
    assert (embedder.balancer, embedder.retry.max_attempts) == ("ring_hash", 2)
    assert embedder.retry.budget.ratio == 0.5
    assert (other.balancer, other.retry.budget.ratio) == ("least_request", 0.2)


def test_overrides_come_as_json_in_a_flag() -> None:
    overrides = json.dumps({"embedder": {"max_attempts": 5}})
    settings = load_run_settings(["--service", "x", "--services", overrides], {})
    assert policy_from_settings(settings)("embedder").retry.max_attempts == 5


@pytest.mark.parametrize(
    "overrides", ['{"embedder": {"balancer": "random"}}', '{"e": {"colour": 1}}', "[1]"]
)
def test_bad_overrides_are_config_errors_naming_services(overrides: str) -> None:
    with pytest.raises(ConfigError, match="--services"):
        load_run_settings(["--service", "x", "--services", overrides], {})


def test_outlier_settings_per_service() -> None:
    overrides = json.dumps({"embedder": {"eject_after": 0}, "ranker": {"max_ejected": 0.25}})
    settings = load_run_settings(["--service", "x", "--services", overrides], {})
    policy = policy_from_settings(settings)
    off, quarter, default = policy("embedder"), policy("ranker"), policy("other")
    assert off.outlier.consecutive_failures is None and off.outlier.failure_rate is None
    assert quarter.outlier.max_ejection_fraction == 0.25
    assert default.outlier.consecutive_failures == 5


def test_the_fronted_services_queue_limit_wins_and_other_entries_are_for_their_sidecars() -> None:
    overrides = json.dumps({"embedder": {"queue_limit": 2}, "ranker": {"queue_limit": 0}})
    argv = ["--queue-limit", "8", "--services", overrides]
    settings = {s: load_run_settings(["--service", s, *argv], {}) for s in ("embedder", "ranker")}
    assert queue_limit_of(settings["embedder"]) == 2
    assert queue_limit_of(settings["ranker"]) == 0  # no shedding for this one
    assert queue_limit_of(load_run_settings(["--service", "other", *argv], {})) == 8
    with pytest.raises(ConfigError, match="--services"):
        load_run_settings(["--service", "x", "--services", '{"x": {"queue_limit": -1}}'], {})

"""docker-compose.yml passes the offline validator, as a whole and profile by profile."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .stack import COMPOSE, VALIDATOR, profiles

pytestmark = pytest.mark.timeout(30)


def validate(*args: str) -> subprocess.CompletedProcess[str]:
    if not VALIDATOR.exists():
        pytest.skip(f"the offline compose validator is not here: {VALIDATOR} is absent")
    return subprocess.run(
        # This interpreter, not the script's `python3` shebang: it has jsonschema and PyYAML.
        [sys.executable, str(VALIDATOR), "--require-healthchecks", *args, str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def test_the_stack_has_a_consul_and_an_mdns_profile() -> None:
    assert profiles() == ["consul", "mdns"]


@pytest.mark.parametrize("profile", [None, *profiles()])
def test_compose_file_validates_offline_with_healthchecks_and_no_warning(
    profile: str | None,
) -> None:
    result = validate(*(["--profile", profile] if profile else []))
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert report.startswith("OK: "), report
    assert "warning" not in report, report

"""Settings: ARROWMESH_* environment variables become the transport's limits."""

from __future__ import annotations

import pydantic
import pytest

from sidecar import Settings


def test_defaults_are_the_transport_defaults() -> None:
    from transport import Limits

    assert Settings().limits() == Limits()


def test_environment_variables_set_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARROWMESH_MAX_MESSAGE_SIZE", "1048576")
    monkeypatch.setenv("ARROWMESH_MAX_RANK", "8")
    limits = Settings().limits()
    assert limits.max_message_size == 1 << 20
    assert limits.max_rank == 8


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("ARROWMESH_MAX_TENSORS", "0", "max_tensors"),
        ("ARROWMESH_MAX_HEADER_SIZE", "100", "max_header_size"),
        ("ARROWMESH_INLINE_THRESHOLD", "99999999", "inline_threshold"),
        ("ARROWMESH_CHUNK_SIZE", "lots", "chunk_size"),
    ],
)
def test_a_bad_value_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(pydantic.ValidationError, match=says):
        Settings()


def test_a_service_takes_its_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from sidecar import Service

    monkeypatch.setenv("ARROWMESH_MAX_TENSORS", "3")
    assert Service(lambda x: x, service="s").limits.max_tensors == 3

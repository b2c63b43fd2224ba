"""Structured logs: one JSON object or one text line per record, extra fields included."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from sidecar._logging import configure_logging

OURS = ("sidecar", "discovery", "transport")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back for the next test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in OURS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_lines_carry_the_event_and_every_extra_field() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    logging.getLogger("sidecar.test").info(
        "endpoint ejected", extra={"cluster": "embedder", "failures": 5, "addr": ("h", 1)}
    )
    [line] = lines(stream)
    record = json.loads(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record.pop("ts"))
    assert record == {
        "level": "info",
        "logger": "sidecar.test",
        "event": "endpoint ejected",
        "cluster": "embedder",
        "failures": 5,
        "addr": ["h", 1],
    }


def test_json_lines_carry_the_exception_as_a_string() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("sidecar.test").exception("handler failed")
    [line] = lines(stream)
    record = json.loads(line)
    assert record["level"] == "error"
    assert "Traceback" in record["exc"] and "ValueError: boom" in record["exc"]


def test_values_json_cannot_encode_are_written_as_strings() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    logging.getLogger("sidecar.test").warning("odd", extra={"obj": object(), "n": 1.5})
    record = json.loads(lines(stream)[0])
    assert record["obj"].startswith("<object object") and record["n"] == 1.5


def test_text_lines_are_ts_level_logger_event_then_key_values() -> None:
    stream = io.StringIO()
    configure_logging("info", "text", stream)
    logging.getLogger("discovery.x").info(
        "registry down %s", "again", extra={"backend": "consul", "why": "connection refused"}
    )
    [line] = lines(stream)
    ts, rest = line.split(" ", 1)
    assert ts.endswith("Z")
    assert rest == 'info discovery.x registry down again backend=consul why="connection refused"'


def test_text_lines_follow_with_the_traceback() -> None:
    stream = io.StringIO()
    configure_logging("warning", "text", stream)
    try:
        raise KeyError("k")
    except KeyError:
        logging.getLogger("sidecar.test").error("lost", exc_info=True)
    first, *rest = lines(stream)
    assert first.endswith("error sidecar.test lost")
    assert rest[0].startswith("Traceback") and rest[-1] == "KeyError: 'k'"


def test_an_extra_key_named_like_a_head_field_is_kept_apart() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    logging.getLogger("sidecar.test").info("real", extra={"event": "clash", "level": 3})
    record = json.loads(lines(stream)[0])
    assert (record["event"], record["event_"], record["level"], record["level_"]) == (
        "real",
        "clash",
        "info",
        3,
    )


def test_the_level_governs_our_packages_and_other_libraries_stay_at_warning() -> None:
    stream = io.StringIO()
    configure_logging("debug", "json", stream)
    logging.getLogger("transport.link").debug("frame sent")
    logging.getLogger("aiohttp.access").info("GET /healthz")
    logging.getLogger("aiohttp.server").warning("bad request")
    assert [json.loads(line)["event"] for line in lines(stream)] == ["frame sent", "bad request"]


def test_records_below_the_level_are_dropped() -> None:
    stream = io.StringIO()
    configure_logging("warning", "json", stream)
    logging.getLogger("sidecar.x").info("quiet")
    logging.getLogger("sidecar.x").warning("loud")
    assert [json.loads(line)["event"] for line in lines(stream)] == ["loud"]


def test_configuring_again_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "json", first)
    configure_logging("info", "text", second)
    logging.getLogger("sidecar.x").info("once")
    assert first.getvalue() == ""
    assert len(lines(second)) == 1 and lines(second)[0].endswith("info sidecar.x once")


@pytest.mark.parametrize(("level", "fmt"), [("verbose", "json"), ("info", "xml")])
def test_an_unknown_level_or_format_raises_value_error(level: str, fmt: str) -> None:
    with pytest.raises(ValueError, match=r"verbose|xml"):
        configure_logging(level, fmt, io.StringIO())  # type: ignore[arg-type]  # bad on purpose

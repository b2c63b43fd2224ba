"""Structured logs for `sidecar run` (the only caller: libraries never configure handlers).

A record becomes one line: the message is the `event`, every `extra=` key a field.

    json: {"ts": "2025-01-02T03:04:05.678Z", "level": "info", "logger": "sidecar._daemon",
           "event": "endpoint ejected", "cluster": "embedder"}
    text: 2025-01-02T03:04:05.678Z info sidecar._daemon endpoint ejected cluster=embedder

An exception becomes the `exc` field (in text, the traceback follows the line). An `extra`
key that clashes with ts, level, logger or event is kept with a trailing underscore.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Final, TextIO

from ._settings import LogFormat

_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# The packages whose records `level` governs; other libraries stay at warning and above,
# since some log per request at info (aiohttp's access log).
_OURS: Final = ("sidecar", "discovery", "transport")
_HEAD: Final = ("ts", "level", "logger", "event")
# Attributes every LogRecord has; whatever else a record carries came from `extra=`.
_STANDARD: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
    fields: dict[str, object] = {
        "ts": ts.replace("+00:00", "Z"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            fields[f"{key}_" if key in _HEAD else key] = value
    return fields


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            fields["stack"] = self.formatStack(record.stack_info)
        return json.dumps(fields, default=str, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        line = " ".join(str(fields.pop(key)) for key in _HEAD)
        line += "".join(f" {key}={_text_value(value)}" for key, value in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def _text_value(value: object) -> str:
    text = str(value)
    # Quote what would split the line into the wrong key=value pairs.
    if not text or any(c.isspace() or c in '="' for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class _MeshHandler(logging.StreamHandler[TextIO]):
    """The handler `configure_logging` installs, found again by its class to be replaced."""


def configure_logging(level: str, fmt: LogFormat, stream: TextIO | None = None) -> None:
    """Send log records to `stream` (default: sys.stderr at call time) as JSON or text lines.

    Calling again replaces the handler installed before. Raises ValueError for an unknown
    level (debug, info, warning, error) or format (json, text).
    """
    if level not in _LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(_LEVELS)}")
    formatters = {"json": _JsonFormatter, "text": _TextFormatter}
    if fmt not in formatters:
        raise ValueError(f"log format {fmt!r} is not json or text")
    handler = _MeshHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatters[fmt]())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _MeshHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(_LEVELS[level], logging.WARNING))
    for name in _OURS:
        logging.getLogger(name).setLevel(_LEVELS[level])

"""Query strings and read options parsed as the agent parses them (consul-api.md §2.6, §4).

`parse_query` is Go's `url.ParseQuery` (the agent answers a bare 500 when it fails);
`parse_read_options` is `HTTPHandlers.parse`: consistency flags, then `wait`, then `index`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from ._duration import MINUTE, SECOND, DurationError, parse_duration
from ._errors import ApiError

Query = Mapping[str, list[str]]

DEFAULT_QUERY_TIME: Final = 5 * MINUTE  # default_query_time
MAX_QUERY_TIME: Final = 10 * MINUTE  # max_query_time
JITTER_FRACTION: Final = 16  # structs.JitterFraction
_UINT: Final = re.compile("[0-9]+")
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_TRUE: Final = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE: Final = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_query(raw: str) -> dict[str, list[str]]:
    """Go's `url.ParseQuery`; raises `ValueError` where Go returns an error."""
    values: dict[str, list[str]] = {}
    failed = False
    for part in raw.split("&"):
        if ";" in part:
            failed = True  # Go 1.17+: "invalid semicolon separator in query"
            continue
        if not part:
            continue
        key, _, value = part.partition("=")
        try:
            values.setdefault(_unescape(key), []).append(_unescape(value))
        except ValueError:
            failed = True
    if failed:
        raise ValueError("invalid query")
    return values


def _unescape(text: str) -> str:
    out = bytearray()
    index = 0
    while index < len(text):
        char = text[index]
        if char == "%":
            digits = text[index + 1 : index + 3]
            if len(digits) != 2 or not set(digits) <= _HEX:
                raise ValueError(f"invalid URL escape {text[index : index + 3]!r}")
            out.append(int(digits, 16))
            index += 3
            continue
        out += b" " if char == "+" else char.encode("utf-8")
        index += 1
    return out.decode("utf-8", errors="replace")


def first(query: Query, key: str) -> str:
    """Go's `Values.Get`: the first value, or `""`."""
    return (query.get(key) or [""])[0]


def parse_go_bool(text: str) -> bool | None:
    """Go's `strconv.ParseBool`, None where it fails."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return None


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """What a health or catalog read asked for (§4)."""

    min_index: int = 0
    wait: int = 0  # nanoseconds as sent; 0 when absent
    consistency: str = "leader"

    def wait_seconds(self, rng: random.Random | None) -> float:
        """The time a blocking read may wait: default, cap, then jitter unless `rng` is None."""
        wait = self.wait
        if wait > MAX_QUERY_TIME:
            wait = MAX_QUERY_TIME
        elif wait <= 0:
            wait = DEFAULT_QUERY_TIME
        if rng is not None:
            wait += int(rng.random() * (wait // JITTER_FRACTION))  # lib.RandomStagger
        return wait / SECOND


def parse_read_options(query: Query) -> ReadOptions:
    """Consistency flags, then `wait` and `index`, with the agent's 400 texts."""
    consistency = _consistency(query)
    index, wait = parse_wait(query)
    return ReadOptions(index, wait, consistency)


def parse_wait(query: Query) -> tuple[int, int]:
    """`(index, wait)` from `?index` and `?wait` (Go's `parseWait`: wait first)."""
    wait = 0
    if text := first(query, "wait"):
        try:
            wait = parse_duration(text)
        except DurationError:
            raise ApiError(400, "Invalid wait time") from None
    index = 0
    if text := first(query, "index"):
        if not _UINT.fullmatch(text) or int(text) >= 1 << 64:
            raise ApiError(400, "Invalid index")
        index = int(text)
    return index, wait


def _consistency(query: Query) -> str:
    stale, consistent = "stale" in query, "consistent" in query
    if max_stale := first(query, "max_stale"):
        try:
            stale = parse_duration(max_stale) > 0 or stale
        except DurationError:
            raise ApiError(400, f'Invalid max_stale value "{max_stale}"') from None
    if stale and consistent:
        raise ApiError(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
    return "stale" if stale else "consistent" if consistent else "leader"

"""Go's `time.ParseDuration` and `time.Duration.String` (consul-api.md §3.2).

Durations are integer nanoseconds, as in Go, so `"1.5s"` and `1500000000` compare equal and
the agent's error texts (`time: missing unit in duration "10"`) come out unchanged.
"""

from __future__ import annotations

from typing import Final

MICROSECOND: Final = 1_000
MILLISECOND: Final = 1_000 * MICROSECOND
SECOND: Final = 1_000 * MILLISECOND
MINUTE: Final = 60 * SECOND
HOUR: Final = 60 * MINUTE

_UNITS: Final = {
    "ns": 1,
    "us": MICROSECOND,
    "\u00b5s": MICROSECOND,  # micro sign
    "\u03bcs": MICROSECOND,  # Greek mu
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}
_LIMIT: Final = 1 << 63


class DurationError(ValueError):
    """A string Go's `time.ParseDuration` rejects; `str()` is Go's message."""


def go_quote(text: str) -> str:
    """Go's `time.quote`: ASCII kept, other characters as `\\xNN` bytes."""
    out = ['"']
    for char in text:
        if char < " " or char >= "\x80":
            out.extend(f"\\x{byte:02x}" for byte in char.encode("utf-8", "surrogatepass"))
        elif char in '"\\':
            out.append("\\" + char)
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def parse_duration(text: str) -> int:
    """Nanoseconds in `text` (`"1m30s"`, `"-1.5h"`, `"0"`); raises `DurationError`."""
    rest, negative = text, False
    if rest[:1] in ("-", "+"):
        negative, rest = rest[0] == "-", rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise _invalid(text)
    total = 0
    while rest:
        amount, rest = _one_term(rest, text)
        total += amount
        if total > _LIMIT:
            raise _invalid(text)
    if negative:
        return -total
    if total >= _LIMIT:
        raise _invalid(text)
    return total


def _one_term(rest: str, orig: str) -> tuple[int, str]:
    """One `[0-9]*(.[0-9]*)?unit` term: (nanoseconds, what follows)."""
    if not (rest[0] == "." or _is_digit(rest[0])):
        raise _invalid(orig)
    whole, after = _leading_int(rest, orig)
    had_whole = len(after) != len(rest)
    frac, scale, had_frac = 0, 1.0, False
    if after[:1] == ".":
        frac, scale, tail = _leading_fraction(after[1:])
        had_frac = len(tail) != len(after) - 1
        after = tail
    if not had_whole and not had_frac:
        raise _invalid(orig)
    end = 0
    while end < len(after) and not (after[end] == "." or _is_digit(after[end])):
        end += 1
    if end == 0:
        raise DurationError(f"time: missing unit in duration {go_quote(orig)}")
    name, after = after[:end], after[end:]
    unit = _UNITS.get(name)
    if unit is None:
        raise DurationError(f"time: unknown unit {go_quote(name)} in duration {go_quote(orig)}")
    if whole > _LIMIT // unit:
        raise _invalid(orig)
    value = whole * unit
    if frac > 0:
        # Go converts through float64 here, and so do we, to round the same way.
        value += int(float(frac) * (float(unit) / scale))
        if value > _LIMIT:
            raise _invalid(orig)
    return value, after


def _leading_int(text: str, orig: str) -> tuple[int, str]:
    value, index = 0, 0
    while index < len(text) and _is_digit(text[index]):
        value = value * 10 + ord(text[index]) - 48
        if value > _LIMIT:
            raise _invalid(orig)
        index += 1
    return value, text[index:]


def _leading_fraction(text: str) -> tuple[int, float, str]:
    # Digits past int64 precision are consumed but ignored, as in Go.
    value, scale, index, overflow = 0, 1.0, 0, False
    while index < len(text) and _is_digit(text[index]):
        if not overflow:
            candidate = value * 10 + ord(text[index]) - 48
            if candidate > _LIMIT:
                overflow = True
            else:
                value, scale = candidate, scale * 10
        index += 1
    return value, scale, text[index:]


def _is_digit(char: str) -> bool:
    return "0" <= char <= "9"


def _invalid(orig: str) -> DurationError:
    return DurationError(f"time: invalid duration {go_quote(orig)}")


def format_duration(nanos: int) -> str:
    """Go's `Duration.String`: `"10s"`, `"1m30s"`, `"1.5s"`, `"500ms"`, `"0s"`."""
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    size = abs(nanos)
    if size < MICROSECOND:
        return f"{sign}{size}ns"
    if size < MILLISECOND:
        return f"{sign}{_fixed(size, 3)}\u00b5s"
    if size < SECOND:
        return f"{sign}{_fixed(size, 6)}ms"
    whole_seconds = size // SECOND
    text = f"{_fixed(whole_seconds % 60 * SECOND + size % SECOND, 9)}s"
    minutes = whole_seconds // 60
    if minutes:
        text = f"{minutes % 60}m{text}"
        if minutes // 60:
            text = f"{minutes // 60}h{text}"
    return sign + text


def _fixed(value: int, places: int) -> str:
    """`value / 10**places` with trailing zeros (and a bare point) dropped."""
    whole, frac = divmod(value, 10**places)
    digits = f"{frac:0{places}d}".rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)

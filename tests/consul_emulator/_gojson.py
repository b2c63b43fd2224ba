"""JSON in and out the way the agent's Go code does it (consul-api.md §3.1).

Decoding follows `encoding/json` with `DisallowUnknownFields`, as `lib.DecodeJSON` sets it up:

- only the first JSON value of a body is read (a `json.Decoder`), an empty body is `EOF`;
- object keys match struct fields case-insensitively, an exact match first; a later duplicate
  key overwrites an earlier one; `null` leaves a field as it was;
- the first unknown key or wrong type in document order is the error, with Go's wording
  (`json: unknown field "Bogus"`, `json: cannot unmarshal string into Go struct field .Port of
  type int`). The struct name is empty because the agent decodes into an anonymous `aux`
  struct in its `UnmarshalJSON` methods.

Encoding is `json.Marshal`: compact, keys in the order given, `<`, `>`, `&`, U+2028 and U+2029
escaped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_HTML_ESCAPES: Final = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}
_LINE_ESCAPES: Final = {"\u2028": "\\u2028", "\u2029": "\\u2029"}


class GoJsonError(ValueError):
    """Input `encoding/json` would reject; `str()` is Go's message."""


@dataclass(frozen=True, slots=True)
class Obj:
    """A JSON object as Go's decoder walks it: every key, in order, duplicates kept."""

    pairs: tuple[tuple[str, object], ...]


@dataclass(frozen=True, slots=True)
class Number:
    """A JSON number with a fraction or exponent, kept as written (Go quotes the literal)."""

    text: str


def parse_body(body: bytes) -> object:
    """The first JSON value of `body`; raises `GoJsonError` (`EOF`, syntax errors)."""
    # Go replaces invalid UTF-8 in strings with U+FFFD rather than failing.
    text = body.decode("utf-8", errors="replace").lstrip(" \t\r\n")
    if not text:
        raise GoJsonError("EOF")
    decoder = json.JSONDecoder(
        object_pairs_hook=lambda pairs: Obj(tuple(pairs)),
        parse_float=Number,
        parse_constant=_reject_constant,
    )
    try:
        value, _ = decoder.raw_decode(text)
    except json.JSONDecodeError as exc:
        raise GoJsonError(_syntax_message(exc)) from None
    return value


def _reject_constant(name: str) -> object:
    # Python accepts NaN and Infinity; Go stops at their first letter.
    raise GoJsonError(f"invalid character {_quote_char(name[0])} looking for beginning of value")


def _syntax_message(exc: json.JSONDecodeError) -> str:
    if exc.pos >= len(exc.doc) or exc.msg.startswith("Unterminated string"):
        return "unexpected EOF"
    char = _quote_char(exc.doc[exc.pos])
    context = {
        "Expecting value": "looking for beginning of value",
        "Expecting property name enclosed in double quotes": (
            "looking for beginning of object key string"
        ),
        "Expecting ':' delimiter": "after object key",
        "Expecting ',' delimiter": "after object key:value pair",
        "Invalid control character at": "in string literal",
        "Invalid \\escape": "in string escape code",
    }
    return f"invalid character {char} {context.get(exc.msg, 'looking for beginning of value')}"


def _quote_char(char: str) -> str:
    if char == "'":
        return "'\\''"
    if char == '"':
        return "'\"'"
    return "'" + json.dumps(char, ensure_ascii=False)[1:-1] + "'"


def fold(key: str) -> str:
    """Go's case folding for field names: ASCII case, plus U+017F (long s) as `s`."""
    return key.lower().replace("\u017f", "s")


def clean(text: str) -> str:
    """Lone surrogates (from `\\ud800` escapes) become U+FFFD, as Go decodes them."""
    return _LONE_SURROGATE.sub("\ufffd", text)


# -- typed decoding ---------------------------------------------------------------------------

Decode = Callable[[object, str], object]
"""Decodes one JSON value for the named field; raises `GoJsonError`. `None` input means null."""


@dataclass(frozen=True, slots=True)
class GoType:
    """One Go type: its spelling in error messages and how to decode a non-null value."""

    name: str
    decode: Decode
    zero: object = None  # what a JSON null becomes inside a slice or map


@dataclass(frozen=True, slots=True)
class Field:
    """A struct field: the JSON key Go matches (its name or its tag) and its type."""

    key: str
    type: GoType
    attr: str = ""


def type_error(value: object, field: str, type_name: str, *, literal: bool = False) -> GoJsonError:
    """Go's `UnmarshalTypeError` text for `value` landing in `field` of `type_name`."""
    what = describe(value, literal=literal)
    return GoJsonError(
        f"json: cannot unmarshal {what} into Go struct field .{field} of type {type_name}"
    )


def describe(value: object, *, literal: bool = False) -> str:
    """Go's name for a JSON value in type errors; numbers with their literal if asked."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | Number):
        text = value.text if isinstance(value, Number) else str(value)
        return f"number {text}" if literal else "number"
    if isinstance(value, list):
        return "array"
    return "object"


def _string(value: object, field: str) -> object:
    if not isinstance(value, str):
        raise type_error(value, field, "string")
    return clean(value)


def _int(value: object, field: str) -> object:
    if isinstance(value, bool) or not isinstance(value, int | Number):
        raise type_error(value, field, "int")
    if isinstance(value, Number) or not _INT64_MIN <= value <= _INT64_MAX:
        raise type_error(value, field, "int", literal=True)
    return value


def _bool(value: object, field: str) -> object:
    if not isinstance(value, bool):
        raise type_error(value, field, "bool")
    return value


def _any(value: object, field: str) -> object:
    """`interface{}`: numbers become float64, as Go decodes them."""
    if isinstance(value, Number | int) and not isinstance(value, bool):
        try:
            number = float(value.text) if isinstance(value, Number) else float(value)
        except OverflowError:  # an integer literal beyond float64
            number = math.inf
        if not math.isfinite(number):
            raise type_error(value, field, "float64", literal=True)
        return number
    return value


STRING: Final = GoType("string", _string, "")
INT: Final = GoType("int", _int, 0)
BOOL: Final = GoType("bool", _bool, False)
ANY: Final = GoType("interface {}", _any)


def list_of(item: GoType, name: str = "") -> GoType:
    """A Go slice of `item` (`[]string` unless `name` spells a named type)."""

    def decode(value: object, field: str) -> object:
        if not isinstance(value, list):
            raise type_error(value, field, name or f"[]{item.name}")
        return [item.zero if element is None else item.decode(element, field) for element in value]

    return GoType(name or f"[]{item.name}", decode)


def map_of(item: GoType) -> GoType:
    """A Go `map[string]item`; keys are exact, a later duplicate wins."""
    name = f"map[string]{item.name}"

    def decode(value: object, field: str) -> object:
        if not isinstance(value, Obj):
            raise type_error(value, field, name)
        out: dict[str, object] = {}
        for key, element in value.pairs:
            out[clean(key)] = item.zero if element is None else item.decode(element, field)
        return out

    return GoType(name, decode)


def struct_of(name: str, fields: Sequence[Field], zero: object = None) -> GoType:
    """A Go struct decoded field by field into a dict keyed by `Field.attr` (or `.key`)."""

    def decode(value: object, field: str) -> object:
        if not isinstance(value, Obj):
            raise type_error(value, field, name)
        return decode_fields(value, fields, prefix=f"{field}.")

    return GoType(name, decode, zero)


def raw_object(name: str) -> GoType:
    """A struct the emulator accepts but does not interpret (`Proxy`, `Connect`)."""

    def decode(value: object, field: str) -> object:
        if not isinstance(value, Obj):
            raise type_error(value, field, name)
        return to_python(value)

    return GoType(name, decode)


def decode_fields(obj: Obj, fields: Sequence[Field], prefix: str = "") -> dict[str, object]:
    """Decode `obj` into the struct `fields`; unknown keys and wrong types raise."""
    exact = {field.key: field for field in fields}
    folded = {fold(field.key): field for field in fields}
    out: dict[str, object] = {}
    for key, value in obj.pairs:
        field = exact.get(key) or folded.get(fold(key))
        if field is None:
            raise GoJsonError(f"json: unknown field {json.dumps(clean(key), ensure_ascii=False)}")
        if value is not None:  # null leaves a Go field as it was
            out[field.attr or field.key] = field.type.decode(value, prefix + field.key)
    return out


def decode_top(value: object, type_name: str, fields: Sequence[Field]) -> dict[str, object]:
    """Decode a whole body into a struct; `null` is an empty struct, as in Go."""
    if value is None:
        return {}
    if not isinstance(value, Obj):
        raise GoJsonError(
            f"json: cannot unmarshal {describe(value)} into Go value of type {type_name}"
        )
    return decode_fields(value, fields)


def to_python(value: object) -> object:
    """Plain Python JSON values (dicts, lists, floats) from the decoder's types."""
    if isinstance(value, Obj):
        return {key: to_python(item) for key, item in value.pairs}
    if isinstance(value, list):
        return [to_python(item) for item in value]
    if isinstance(value, Number):
        return float(value.text)
    return value


# -- encoding ---------------------------------------------------------------------------------


def encode(value: object, *, pretty: bool = False) -> bytes:
    """`json.Marshal` (or `MarshalIndent` with four spaces and a newline, for `?pretty`)."""
    if pretty:
        text = json.dumps(value, ensure_ascii=False, indent=4) + "\n"
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for char, escape in (*_HTML_ESCAPES.items(), *_LINE_ESCAPES.items()):
        text = text.replace(char, escape)
    return text.encode("utf-8")

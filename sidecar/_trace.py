"""W3C trace context: keep a caller's `traceparent`, or start a trace when there is none."""

from __future__ import annotations

import os
import re
from typing import Final

_TRACEPARENT: Final = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def new_traceparent() -> str:
    """A fresh, sampled traceparent (version 00)."""
    ids = os.urandom(24).hex()
    return f"00-{ids[:32]}-{ids[32:]}-01"


def ensure_traceparent(value: str | None) -> str:
    """`value` if it is a valid traceparent, else a new one."""
    if value is not None and _TRACEPARENT.match(value) and value[3:35] != "0" * 32:
        return value
    return new_traceparent()

"""Checks shared by the policies' `__post_init__`: each raises ValueError naming the field."""

from __future__ import annotations

import math


def check_seconds(name: str, value: float, *, zero: bool = False) -> None:
    """`value` is a finite number of seconds, positive (or also 0 when `zero`)."""
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        low = ">= 0" if zero else "> 0"
        raise ValueError(f"{name}={value} must be a finite number of seconds {low}")


def check_fraction(name: str, value: float, *, zero: bool = False) -> None:
    """`value` is in (0, 1] (or [0, 1] when `zero`)."""
    if not (0 <= value <= 1) or (value == 0 and not zero):
        low = "[0" if zero else "(0"
        raise ValueError(f"{name}={value} must be in {low}, 1]")


def check_at_least(name: str, value: float, low: float) -> None:
    """`value` is finite and at least `low`."""
    if not (math.isfinite(value) and value >= low):
        raise ValueError(f"{name}={value} must be a finite number >= {low}")

"""How many repetitions each (transport, size) cell gets, and in what order: pure decisions.

A cell samples until it has `min_reps` and has spent `cell_s`, or reaches `max_reps`, or
hits the hard cap `cap_s` (so a 256 MiB cell of a slow peer stops after a few reps).
Transports take turns in blocks of about `block_s`, the starting transport rotating each
round, so slow drifts of the machine (scheduler placement, frequency) hit all alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Budget:
    """Time and count bounds for one cell. Raises ValueError for bounds that cannot work."""

    cell_s: float
    min_reps: int
    max_reps: int
    cap_s: float
    block_s: float
    warmup_s: float
    min_warmup_reps: int
    max_warmup_reps: int
    fixed_reps: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.min_reps <= self.max_reps:
            raise ValueError(f"need 1 <= min_reps={self.min_reps} <= max_reps={self.max_reps}")
        if not 1 <= self.min_warmup_reps <= self.max_warmup_reps:
            raise ValueError(
                f"need 1 <= min_warmup_reps={self.min_warmup_reps} "
                f"<= max_warmup_reps={self.max_warmup_reps}"
            )
        if self.fixed_reps is not None and self.fixed_reps < 1:
            raise ValueError(f"reps={self.fixed_reps} must be at least 1")
        if min(self.cell_s, self.cap_s, self.block_s, self.warmup_s) <= 0:
            raise ValueError("time budgets must be positive")


QUICK = Budget(
    cell_s=1.5,
    min_reps=5,
    max_reps=4000,
    cap_s=6.0,
    block_s=0.04,
    warmup_s=0.1,
    min_warmup_reps=2,
    max_warmup_reps=200,
)
FULL = Budget(
    cell_s=3.0,
    min_reps=5,
    max_reps=20000,
    cap_s=20.0,
    block_s=0.05,
    warmup_s=0.3,
    min_warmup_reps=2,
    max_warmup_reps=1000,
)


def is_done(budget: Budget, reps: int, spent_ns: int) -> bool:
    """Whether a cell with `reps` samples totalling `spent_ns` has enough."""
    if spent_ns >= budget.cap_s * 1e9:
        return True
    if budget.fixed_reps is not None:
        return reps >= budget.fixed_reps
    if reps >= budget.max_reps:
        return True
    return reps >= budget.min_reps and spent_ns >= budget.cell_s * 1e9


def max_rounds(budget: Budget) -> int:
    """An upper bound on turns per cell (each turn adds at least one repetition)."""
    return budget.fixed_reps if budget.fixed_reps is not None else budget.max_reps


def block_reps(budget: Budget, reps: int, typical_ns: int) -> int:
    """Repetitions for a cell's next turn: about `block_s` worth, at least one."""
    wanted = max(1, int(budget.block_s * 1e9 // max(typical_ns, 1)))
    return max(1, min(wanted, max_rounds(budget) - reps))


def warmup_reps(budget: Budget, typical_ns: int) -> int:
    """Discarded repetitions before sampling: about `warmup_s` worth, within bounds."""
    wanted = int(budget.warmup_s * 1e9 // max(typical_ns, 1))
    return min(max(wanted, budget.min_warmup_reps), budget.max_warmup_reps)


def progress(budget: Budget, reps: int, spent_ns: int) -> float:
    """How far along a cell is, from 0 to 1."""
    if is_done(budget, reps, spent_ns):
        return 1.0
    if budget.fixed_reps is not None:
        return reps / budget.fixed_reps
    return min(0.99, max(spent_ns / (budget.cell_s * 1e9), reps / budget.max_reps))


def turn_order(items: Sequence[T], round_index: int) -> list[T]:
    """`items` rotated by `round_index`, so no one always goes first or after the same peer."""
    if not items:
        return []
    shift = round_index % len(items)
    return [*items[shift:], *items[:shift]]

"""How long the fuzzers run: a bounded, reproducible budget in CI, many more examples on request.

CI (the default): hypothesis derandomized (each test's examples depend only on the test),
no example database, and the random-byte fuzzers seeded with `CI_SEED`; the whole
`tests/fuzz` run stays within about 25 s on a loaded 2-core machine.

Long (`--fuzz-long`, or `ARROWMESH_FUZZ_LONG=1`): `LONG_SCALE` times the examples and cases,
a fresh seed per run unless `--fuzz-seed N` (or `ARROWMESH_FUZZ_SEED=N`) gives one. The
seed is printed in pytest's header, after the run, and in every listener fuzzer's failure,
so a failing long run is repeated with `--fuzz-long --fuzz-seed N`.

The profiles are registered, never loaded: other tests keep their own hypothesis settings;
the fuzz tests take theirs from `fuzz()`.

`configure` runs in `pytest_configure` (tests/fuzz/conftest.py), before any fuzz module is
imported, so the decorators below see the chosen budget.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

import hypothesis
from hypothesis import HealthCheck, settings

CI_PROFILE: Final = "arrowmesh-fuzz-ci"
LONG_PROFILE: Final = "arrowmesh-fuzz-long"
CI_SEED: Final = 20260
LONG_SCALE: Final = 50
CI_TIMEOUT: Final = 90.0  # seconds per test; generous: the machine is shared

_SLOW_INPUTS: Final = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
]
settings.register_profile(
    CI_PROFILE,
    derandomize=True,
    database=None,
    deadline=None,  # a loaded machine makes per-example deadlines flaky; tests time out instead
    suppress_health_check=_SLOW_INPUTS,
    print_blob=True,
)
settings.register_profile(
    LONG_PROFILE,
    derandomize=False,
    database=None,
    deadline=None,
    suppress_health_check=_SLOW_INPUTS,
    print_blob=True,
)

F = TypeVar("F", bound=Callable[..., object])


@dataclass(frozen=True, slots=True)
class Budget:
    """The budget of this run."""

    long: bool = False
    seed: int = CI_SEED

    @property
    def scale(self) -> int:
        """How many times the CI number of examples to run."""
        return LONG_SCALE if self.long else 1

    @property
    def profile(self) -> str:
        """The hypothesis profile the fuzz tests run under."""
        return LONG_PROFILE if self.long else CI_PROFILE

    def describe(self) -> str:
        """One line for pytest's header."""
        mode = f"long (x{LONG_SCALE})" if self.long else "ci"
        return (
            f"arrowmesh fuzz: mode={mode} seed={self.seed} hypothesis profile={self.profile}; "
            f"repeat with --fuzz-seed {self.seed}" + (" --fuzz-long" if self.long else "")
        )


_current = Budget()


def configure(long: bool, seed: int | None) -> Budget:
    """Choose the budget for this run (a seed is drawn for a long run that names none)."""
    global _current
    if seed is None:
        seed = secrets.randbelow(1 << 32) if long else CI_SEED
    _current = Budget(long, seed)
    return _current


def current() -> Budget:
    """The budget chosen for this run."""
    return _current


def fuzz(examples: int) -> Callable[[F], F]:
    """Run a hypothesis test for `examples` examples in CI, `LONG_SCALE` times that when long.

    A long run is seeded with the run's seed, so it can be repeated.
    """

    def apply(test: F) -> F:
        budget = current()
        chosen = settings(
            parent=settings.get_profile(budget.profile), max_examples=examples * budget.scale
        )
        wrapped: F = chosen(test)
        if budget.long:
            wrapped = hypothesis.seed(budget.seed)(wrapped)
        return wrapped

    return apply


def event(label: str) -> None:
    """hypothesis.event, for statistics, with `label` made ASCII: the plugin cannot encode a
    surrogate (from quoted hostile input) and fails the whole run with an INTERNALERROR."""
    hypothesis.event(label.encode("ascii", "backslashreplace").decode("ascii"))


def cases(count: int) -> int:
    """How many inputs a random-byte fuzzer sends: `count` in CI, more when long."""
    return count * current().scale


def rng(name: str) -> random.Random:
    """A random source for one fuzzer, fixed by the run's seed and the fuzzer's name."""
    return random.Random(f"{current().seed}:{name}")


def timeout(seconds: float = CI_TIMEOUT) -> float:
    """A test's timeout under this budget."""
    return seconds * current().scale

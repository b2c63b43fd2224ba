"""The fuzzers' budget: `--fuzz-long` runs many more examples, `--fuzz-seed N` repeats a run.

The options are also read from `ARROWMESH_FUZZ_LONG=1` and `ARROWMESH_FUZZ_SEED=N`, which
work however pytest is invoked (pytest reads a sub-directory's options only when that
directory is named on the command line).
"""

from __future__ import annotations

import os

import pytest

from . import _budget


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("arrowmesh fuzz")
    group.addoption(
        "--fuzz-long",
        action="store_true",
        default=False,
        help=f"run the fuzzers {_budget.LONG_SCALE}x longer, with a fresh seed unless"
        " --fuzz-seed gives one (ARROWMESH_FUZZ_LONG=1)",
    )
    group.addoption(
        "--fuzz-seed",
        type=int,
        default=None,
        help="seed of the fuzzers, to repeat a run (ARROWMESH_FUZZ_SEED)",
    )


def pytest_configure(config: pytest.Config) -> None:
    long = bool(config.getoption("fuzz_long", default=False)) or os.environ.get(
        "ARROWMESH_FUZZ_LONG", ""
    ) not in ("", "0")
    seed = config.getoption("fuzz_seed", default=None)
    if seed is None and os.environ.get("ARROWMESH_FUZZ_SEED"):
        seed = int(os.environ["ARROWMESH_FUZZ_SEED"])
    _budget.configure(long, seed)


def pytest_report_header(config: pytest.Config) -> str:
    return _budget.current().describe()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Also at the end (and under -q, which hides the header): the seed repeats the run.
    reports = [r for rs in terminalreporter.stats.values() for r in rs if hasattr(r, "nodeid")]
    if any("tests/fuzz/" in r.nodeid for r in reports):
        terminalreporter.write_line(_budget.current().describe())

"""`sidecar bench ...`: one subcommand per benchmark, each a module with two functions.

A subcommand module provides `add_arguments(parser)` and `run(args, console) -> int`;
registering one is a line in `_COMMANDS`.
Exit codes: 0 after a report (missed targets included), 2 for bad usage, 1 when the run
could not finish, 130 on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Final, Protocol, cast

from rich.console import Console

from ._errors import BenchError

_DESCRIPTION: Final = (
    "Measure arrowmesh against the transports people use instead, in one interleaved run; "
    "print a report and write JSON and a plot."
)
_COMMANDS: Final = {
    "transfer": ("bench.transfer", "round trips of one tensor: arrowmesh vs floor and peers"),
    "discovery": ("bench.discovery", "registration-to-seen and death-to-dropped, per registry"),
    "hop": ("bench.hop", "what one and two sidecar hops add (latency, CPU), against HAProxy"),
    "balance": ("bench.balance", "each balancer with one slow or one failing replica of 4"),
    "oip": ("bench.oip", "tritonclient through the sidecar's OIP doors, against a real Triton"),
    "soak": ("bench.soak", "steady load through sidecars while faults are injected"),
    "all": ("bench.suite", "every benchmark in turn, then REPORT.md and where each target stands"),
    "report": ("bench.report", "REPORT.md from the results on disk, and the targets"),
}


class Command(Protocol):
    """What a subcommand module provides."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace, console: Console) -> int: ...


def main(argv: list[str]) -> int:
    """Run `bench` with the arguments after `bench`; returns the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else 2
    console = Console()
    if not console.is_terminal:  # a log or CI: room for the transfer table's 9 columns
        console.width = max(console.width, 140)
    try:
        with _sigterm_as_interrupt():
            return _load(args.command).run(args, console)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: servers stopped, no report written")
        return 130
    except BenchError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 1


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so server children and temporary files are cleaned up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sidecar bench", description=_DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, summary) in _COMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        _load(name).add_arguments(sub)
    return parser


def _load(name: str) -> Command:
    return cast(Command, importlib.import_module(_COMMANDS[name][0]))

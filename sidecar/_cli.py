"""The `sidecar` command: demo and bench (run arrives with the daemon)."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidecar", description="arrowmesh: a service mesh sidecar for AI traffic"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser("demo", help="start a small mesh on this machine and measure it")
    demo.add_argument("--requests", type=int, default=50, help="requests per path at 4 KiB")
    commands.add_parser(
        "bench", help="run the benchmarks of bench/ (sidecar bench --help)", add_help=False
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `sidecar` console script; returns the exit code."""
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["bench"]:
        from bench._cli import main as bench_main

        return bench_main(args_list[1:])
    args = _parser().parse_args(args_list)
    if args.command == "demo":
        if args.requests < 1:
            print(f"sidecar: --requests={args.requests} must be at least 1", file=sys.stderr)
            return 2
        from ._demo import main as demo_main

        return demo_main(args.requests)
    return 2  # pragma: no cover - argparse rejects unknown commands


def run() -> None:
    """Console script wrapper: exit with main()'s code."""
    sys.exit(main())

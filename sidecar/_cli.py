"""The `sidecar` command: run (the daemon), demo and bench."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidecar", description="arrowmesh: a service mesh sidecar for AI traffic"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", help="the sidecar daemon (sidecar run --help)", add_help=False)
    demo = commands.add_parser("demo", help="start a small mesh on this machine and measure it")
    demo.add_argument("--requests", type=int, default=50, help="requests per path at 4 KiB")
    demo.add_argument(
        "--keep", action="store_true", help="leave the mesh running and print how to call it"
    )
    commands.add_parser(
        "bench", help="run the benchmarks of bench/ (sidecar bench --help)", add_help=False
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `sidecar` console script; returns the exit code."""
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["run"]:
        return run_command(args_list[1:])
    if args_list[:1] == ["bench"]:
        from bench._cli import main as bench_main

        return bench_main(args_list[1:])
    args = _parser().parse_args(args_list)
    if args.command == "demo":
        if args.requests < 1:
            print(f"sidecar: --requests={args.requests} must be at least 1", file=sys.stderr)
            return 2
        from ._demo import main as demo_main

        return demo_main(args.requests, keep=args.keep)
    return 2  # pragma: no cover - argparse rejects unknown commands


def run_command(argv: list[str]) -> int:
    """`sidecar run ARGS`: 0 after a clean drain, 2 for bad configuration, 1 otherwise."""
    from ._config import load_run_config
    from ._daemon import run_daemon
    from ._errors import ConfigError
    from ._logging import configure_logging
    from ._loop import run as run_loop

    try:
        config = load_run_config(argv, os.environ)
    except SystemExit as exc:  # --help, or argparse's own usage error (already printed)
        return exc.code if isinstance(exc.code, int) else 2
    except ConfigError as exc:
        print(f"sidecar run: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.settings.log_level, config.settings.log_format)
    try:
        return run_loop(run_daemon(config, dict(os.environ)))
    except ConfigError as exc:
        print(f"sidecar run: {exc}", file=sys.stderr)
        return 2
    except Exception:
        logging.getLogger("sidecar").exception("sidecar failed")
        return 1


def run() -> None:
    """Console script wrapper: exit with main()'s code."""
    sys.exit(main())

"""`python -m tests.consul_emulator`: the emulator as a process.

Writes `--ready-file` (atomically, JSON `{"address": "H:P", "pid": N}`) once bound, serves until
SIGTERM or SIGINT, then stops and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

from ._emulator import ConsulEmulator


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.consul_emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--reap-interval", type=float, default=30.0, metavar="S")
    parser.add_argument("--min-deregister-after", type=float, default=60.0, metavar="S")
    parser.add_argument(
        "--acl-token",
        action="append",
        metavar="SECRET",
        help="turn ACLs on; repeat for several valid tokens",
    )
    parser.add_argument("--no-wait-jitter", action="store_true")
    parser.add_argument("--node", default="emulator")
    return parser.parse_args(argv)


def _write_atomically(path: Path, data: str) -> None:
    """Readers see no file or the whole file: write a sibling, then rename over."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    emulator = ConsulEmulator(
        args.host,
        args.port,
        reap_interval=args.reap_interval,
        min_deregister_after=args.min_deregister_after,
        acl_tokens=frozenset(args.acl_token) if args.acl_token else None,
        wait_jitter=not args.no_wait_jitter,
        node=args.node,
    )
    async with emulator:
        if args.ready_file is not None:
            ready = json.dumps({"address": emulator.address, "pid": os.getpid()})
            await asyncio.to_thread(_write_atomically, args.ready_file, ready)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    args = _arguments(sys.argv[1:] if argv is None else argv)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The pipeline container of the compose stack: calls the model through its own sidecar.

It shares its sidecar's network namespace and reaches it on loopback (127.0.0.1:7700, the
sidecar's mesh listener). Every `--interval` seconds it sends a batch to the `embedder`
service with `MeshClient`, checks the answer, and logs which replica answered and how many
bytes went through shared memory by reference. Each good answer refreshes a heartbeat file.

    python pipeline.py [--sidecar 127.0.0.1:7700] [--rows 1024] [--interval 1]   run until SIGTERM
    python pipeline.py --check [--max-age 15]   exit 0 if the heartbeat is fresh (healthcheck)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path

logger = logging.getLogger("pipeline")

HEARTBEAT = "/tmp/pipeline.heartbeat"
_WIDTH = 256  # columns of the batch: 1024 rows are 1 MiB of float32, above the inline limit


def build_parser() -> argparse.ArgumentParser:
    """The command line of pipeline.py (the compose test parses each command with it)."""
    parser = argparse.ArgumentParser(prog="pipeline.py", description=__doc__.splitlines()[0])
    parser.add_argument("--sidecar", default="127.0.0.1:7700", help="the sidecar's mesh address")
    parser.add_argument("--service", default="embedder", help="the service to call")
    parser.add_argument("--rows", type=int, default=1024, help=f"rows of {_WIDTH} float32")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between batches")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.add_argument("--heartbeat", default=HEARTBEAT, help="file touched after each answer")
    parser.add_argument("--check", action="store_true", help="check the heartbeat and exit")
    parser.add_argument("--max-age", type=float, default=15.0, help="seconds --check accepts")
    return parser


def check(heartbeat: str, max_age: float, now: float) -> int:
    """0 if `heartbeat` was touched less than `max_age` seconds before `now`, else 1."""
    try:
        age = now - os.stat(heartbeat).st_mtime
    except OSError:
        return 1
    return 0 if age < max_age else 1


async def run(args: argparse.Namespace, stop: asyncio.Event) -> None:
    """Send a batch every `args.interval` seconds until `stop` is set."""
    import numpy as np

    from sidecar import MeshClient, MeshError

    async with MeshClient(args.sidecar) as client:
        # In shared memory when the sidecar shares the directory: only a descriptor moves.
        x = await client.alloc((args.rows, _WIDTH), np.float32)
        x[:] = np.random.default_rng(0).standard_normal(x.shape, dtype=np.float32)
        expected = np.linalg.norm(x, axis=-1)
        sent = 0
        while not stop.is_set():
            start = time.perf_counter()
            try:
                out = await client.infer(args.service, {"x": x}, timeout=args.timeout)
            except MeshError as exc:
                logger.warning("request failed: %s", exc)
            else:
                sent += 1
                replica = out["replica"][0].decode()
                if np.allclose(out["norm"], expected, rtol=1e-5):
                    await asyncio.to_thread(Path(args.heartbeat).touch)
                    stats = client.shm_stats()
                    logger.info(
                        "request %d answered by %s in %.2f ms; %d bytes by reference so far",
                        sent,
                        replica,
                        (time.perf_counter() - start) * 1e3,
                        stats.bytes_by_reference if stats else 0,
                    )
                else:  # no heartbeat: the healthcheck turns the container unhealthy
                    logger.error("request %d: wrong answer from %s", sent, replica)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.interval)  # paces the batches


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(args, stop)


def main(argv: list[str] | None = None) -> int:
    """Run the pipeline until SIGTERM (or the heartbeat check); returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.check:
        return check(args.heartbeat, args.max_age, time.time())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_main(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

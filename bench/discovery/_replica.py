"""A replica for `bench discovery`: an app process plus a registering stand-in sidecar.

    python -m bench.discovery._replica --discovery URI --service S --id ID

Starts the "app" (a TCP listener in its own child process, so it can be killed alone),
registers it, and keeps its health in step with a TCP probe of the app every
`--probe-interval` seconds (what `sidecar run` does for the app it fronts). Prints JSON
lines on stdout: {"event": "registering", "t": ..., "app_pid": ..., "port": ...} just
before `register()`, and {"event": "healthy", "t": ...} once the first pass went through.
`t` is time.monotonic(), the same clock in every process of this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

from discovery import Endpoint
from discovery._cluster import tcp_prober
from discovery._open import open_registry

_APP = (
    "import socket, sys, time\n"
    "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(64)\n"
    "print(s.getsockname()[1], flush=True)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.close()\n"
)


def _say(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)


async def _main(args: argparse.Namespace) -> None:
    app = await asyncio.create_subprocess_exec(sys.executable, "-c", _APP, stdout=subprocess.PIPE)
    assert app.stdout is not None
    port = int(await app.stdout.readline())
    endpoint = Endpoint(args.service, args.id, "127.0.0.1", port)
    probe = tcp_prober(timeout=args.probe_interval)
    registry = open_registry(args.discovery, os.environ)
    try:
        _say("registering", app_pid=app.pid, port=port)
        await registry.register(endpoint)
        await registry.set_health(endpoint.id, True)
        _say("healthy")
        healthy, failures = True, 0
        while True:
            await asyncio.sleep(args.probe_interval)
            failures = 0 if await probe(endpoint) else failures + 1
            if healthy and failures >= args.probe_failures:
                healthy = False
                await registry.set_health(endpoint.id, False, "app not answering")
                _say("unhealthy")
    finally:
        await registry.aclose()
        if app.returncode is None:
            app.kill()
            await app.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--discovery", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--probe-interval", type=float, default=0.25)
    parser.add_argument("--probe-failures", type=int, default=2)
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()

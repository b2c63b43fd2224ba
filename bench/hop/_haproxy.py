"""HAProxy, the peer: one configuration per proxy (pure), and where to find the program.

Each proxy is one process with `nbthread 1` (a core's worth of work, like a sidecar's one
event loop), no log lines, one frontend on a 127.0.0.1 port and one backend server.
`mode tcp` forwards the mesh protocol's bytes as they are; `mode http` parses and
re-issues HTTP/1.1, as the sidecar's `/svc/` passthrough does. It runs in the foreground
(`-db`), so stopping it is a signal to one pid.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from typing import Final, Literal

Mode = Literal["tcp", "http"]

PROGRAM: Final = "haproxy"
INSTALL_HINT: Final = "apt-get install haproxy (or put it on PATH) to include it"


def config(mode: Mode, listen_port: int, upstream: str) -> str:
    """The configuration of a proxy on 127.0.0.1:`listen_port` to `upstream` (host:port)."""
    lines = [
        "global",
        "    nbthread 1",
        "    maxconn 1024",
        "defaults",
        f"    mode {mode}",
        "    timeout connect 5s",
        "    timeout client 120s",
        "    timeout server 120s",
        "frontend bench",
        f"    bind 127.0.0.1:{listen_port}",
        "    default_backend upstream",
        "backend upstream",
        f"    server upstream {upstream}",
    ]
    return "\n".join(lines) + "\n"


def argv(program: str, config_path: str) -> list[str]:
    """The command line of one proxy, in the foreground."""
    return [program, "-f", config_path, "-db"]


def find() -> str | None:
    """The path of the haproxy program, or None when it is not installed."""
    return shutil.which(PROGRAM)


def version(program: str) -> str:
    """`HAProxy version 2.6.12-1 ...`: the first line of `haproxy -v`, or "" if it fails."""
    try:
        done = subprocess.run(
            [program, "-v"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.partition("\n")[0].strip()


def free_ports(count: int) -> list[int]:
    """`count` distinct ports on 127.0.0.1, free right now (HAProxy cannot report a port it
    picked itself). All are bound at once, so none is handed out twice."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports

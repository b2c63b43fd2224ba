"""Throwaway networks of Linux network namespaces on one bridge, for multi-host tests.

    namespace am-<tag>-hub    bridge br0 with ports p1..pN (and lo)
    namespace am-<tag>-<k>    lo, and eth0 = 10.99.<net>.<k>/16, the peer of p<k>

Everything lives inside namespaces, the bridge too: the root namespace gains no
interface, route or firewall rule, and the host's bridge firewall (Docker sets FORWARD
to DROP, and br_netfilter sends bridged frames through it) never sees the test traffic.
Names carry a random tag, so parallel runs do not clash; addresses stay in 10.99.0.0/16.
On exit, processes still inside the namespaces (children of the test) are killed by pid
and the namespaces deleted, which deletes their interfaces and the bridge with them.

Needs root, iproute2's `ip`, and a kernel that allows namespaces (not all containers do):
`unavailable_reason()` says what is missing; `network()` raises NetnsUnavailable when the
kernel refuses the first namespace.

    with network(2) as net:
        a, b = net.hosts
        subprocess.run(b.command(["ping", "-c1", a.address]), check=True)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

SUBNET: Final = "10.99.0.0/16"
INTERFACE: Final = "eth0"  # each host's link to the bridge, named like a container's
IP_TIMEOUT: Final = 30.0


class NetnsUnavailable(Exception):
    """Network namespaces cannot be created here; the message says why."""


@dataclass(frozen=True, slots=True)
class Host:
    """One network namespace on the bridge: a host with one address."""

    netns: str
    address: str
    interface: str = INTERFACE

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this namespace (for subprocess or asyncio.create_subprocess_exec)."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def ip(self, *args: str) -> list[str]:
        """An `ip` command acting on this namespace: `host.ip("link", "set", "eth0", "down")`."""
        return ["ip", "-n", self.netns, *args]

    def run(self, argv: Sequence[str], timeout: float = IP_TIMEOUT) -> str:
        """Run `argv` in this namespace to completion; its stdout, or CalledProcessError."""
        return _run(self.command(argv), timeout)

    def set_link(self, up: bool) -> None:
        """Plug this host's interface into the bridge (`up`) or unplug it: a partition.

        Nothing answers an unplugged host: its peers' packets are dropped, not refused.
        """
        _run(self.ip("link", "set", self.interface, "up" if up else "down"))

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start `argv` in this namespace (the Popen is the process itself: `ip` execs it)."""
        return subprocess.Popen(self.command(argv), **kwargs)

    def pids(self) -> list[int]:
        """Processes running in this namespace."""
        out = subprocess.run(
            ["ip", "netns", "pids", self.netns],
            capture_output=True,
            text=True,
            timeout=IP_TIMEOUT,
            check=False,
        ).stdout
        return [int(p) for p in out.split()]


@dataclass(frozen=True, slots=True)
class Network:
    """Hosts on one bridge; `hosts[k]` has address 10.99.<net>.<k+1>."""

    hub: str
    hosts: tuple[Host, ...]
    prefix_len: int = 16


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here (not Linux, not root, no `ip`), or None."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return "network namespaces need root (run the tests as root, e.g. in CI's container)"
    if shutil.which("ip") is None:
        return "the `ip` command is missing (install iproute2)"
    return None


@contextlib.contextmanager
def network(hosts: int = 2, *, multicast_lo: bool = False) -> Iterator[Network]:
    """A bridge and `hosts` namespaces on it; everything is removed on exit.

    `multicast_lo` also sets the MULTICAST flag on each namespace's lo (Linux loops
    multicast on lo without it; the flag is there to test what needs it).
    """
    if not 1 <= hosts <= 250:
        raise ValueError(f"hosts={hosts} must be in 1..250")
    if reason := unavailable_reason():
        raise NetnsUnavailable(reason)
    tag = secrets.token_hex(4)
    net = secrets.randbelow(254) + 1
    hub = f"am-{tag}-hub"
    made: list[str] = []
    try:
        try:
            _run(["ip", "netns", "add", hub])
        except subprocess.CalledProcessError as exc:
            raise NetnsUnavailable(f"the kernel refused a namespace: {exc.stderr.strip()}") from exc
        made.append(hub)
        _run(["ip", "-n", hub, "link", "set", "lo", "up"])
        # Snooping off: the bridge floods every multicast group like a plain switch.
        _run(["ip", "-n", hub, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"])
        _run(["ip", "-n", hub, "link", "set", "br0", "up"])
        members = []
        for k in range(1, hosts + 1):
            host = Host(f"am-{tag}-{k}", f"10.99.{net}.{k}")
            _run(["ip", "netns", "add", host.netns])
            made.append(host.netns)
            _add_host(hub, host, k, multicast_lo)
            members.append(host)
        yield Network(hub, tuple(members))
    finally:
        _remove(made)


def _add_host(hub: str, host: Host, k: int, multicast_lo: bool) -> None:
    port = f"p{k}"
    # Both ends are made inside namespaces: the veth never exists in the root namespace.
    peer = ["peer", "name", host.interface, "netns", host.netns]
    _run(["ip", "-n", hub, "link", "add", port, "type", "veth", *peer])
    _run(["ip", "-n", hub, "link", "set", port, "master", "br0", "up"])
    _run(host.ip("link", "set", "lo", "up"))
    if multicast_lo:
        _run(host.ip("link", "set", "lo", "multicast", "on"))
    _run(host.ip("addr", "add", f"{host.address}/16", "dev", host.interface))
    _run(host.ip("link", "set", host.interface, "up", "multicast", "on"))


def _remove(names: list[str]) -> None:
    """Kill what still runs inside, then delete the namespaces (their links go with them)."""
    errors = []
    for name in reversed(names):
        for pid in Host(name, "").pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            _run(["ip", "netns", "delete", name])
        except subprocess.CalledProcessError as exc:
            errors.append(f"{name}: {exc.stderr.strip()}")
    if errors:
        raise RuntimeError(f"could not delete network namespaces: {errors}")


def _run(argv: Sequence[str], timeout: float = IP_TIMEOUT) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode:
        raise subprocess.CalledProcessError(done.returncode, argv, done.stdout, done.stderr)
    return done.stdout

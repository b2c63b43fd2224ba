"""Errors of the benchmark harness.

BenchError
├── ServerFailed    a server child did not start, or died
└── EchoMismatch    a transport returned something other than what it was sent
"""

from __future__ import annotations


class BenchError(Exception):
    """Root of the harness's errors: the run cannot produce a trustworthy report."""


class ServerFailed(BenchError):
    """A server child process did not become ready, or exited early."""


class EchoMismatch(BenchError):
    """A round trip returned bytes that differ from what was sent."""


class PeerHung(BenchError):
    """A round trip overran the watchdog's bound; the servers were stopped to end it."""

"""Outcome: how one try of a request ended, as the router saw it.

The one vocabulary the outlier detector and the retry policy share, so "shed", "failed" and
"never sent" mean the same thing to both:

    outcome            outlier detector   retried (idempotent)   retried (not idempotent)
    OK                 success            -                      -
    BAD_REQUEST        success            no                     no
    OVERLOADED         ignored            yes, after retry-after yes (it was never run)
    CONNECT_FAILED     failure            yes                    yes (nothing was sent)
    UNAVAILABLE        failure            yes                    no (it may have run)
    ERROR              failure            no                     no
    DEADLINE_EXCEEDED  failure            no                     no
    CANCELLED          ignored            no                     no
"""

from __future__ import annotations

import enum


class Outcome(enum.Enum):
    """How one try ended."""

    OK = "ok"
    """The endpoint answered with a result."""
    BAD_REQUEST = "bad_request"
    """The endpoint refused the request itself (malformed, too big): says nothing about it."""
    OVERLOADED = "overloaded"
    """The endpoint shed the request before running it: a load signal, not a fault."""
    CONNECT_FAILED = "connect_failed"
    """No connection could be made: nothing was sent."""
    UNAVAILABLE = "unavailable"
    """The endpoint cannot serve now (draining, app not ready) or the link broke mid-request."""
    ERROR = "error"
    """The endpoint's handler failed the request."""
    DEADLINE_EXCEEDED = "deadline_exceeded"
    """No answer before the deadline."""
    CANCELLED = "cancelled"
    """The caller stopped waiting (a hedge lost, the downstream went away)."""

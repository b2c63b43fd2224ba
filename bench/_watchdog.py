"""Bounding every client call in time without touching the hot path.

No transport gets a per-call timeout: each would cost its round trip something different
(a deadline timer, a poll before each read). Instead one thread watches the call in
progress and, should it overrun, stops every server child, which makes the blocked call
fail with EOF. `GuardedClient` wraps a client so that each call is watched and any failure
becomes a BenchError naming the transport.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final

from ._errors import BenchError, PeerHung
from .peers._base import Client, Payload

logger = logging.getLogger(__name__)

HUNG_AFTER_S: Final = 120.0


class Watchdog:
    """Runs `on_expire` once, from its own thread, if a guarded block overruns its time."""

    def __init__(self, on_expire: Callable[[], None]) -> None:
        self._on_expire = on_expire
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._closed = False
        self.expired = False
        self._thread = threading.Thread(target=self._watch, name="bench-watchdog", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def guard(self, what: str, seconds: float = HUNG_AFTER_S) -> Iterator[None]:
        """Watch the block; raises PeerHung if it overran (the servers are stopped by then)."""
        with self._cond:
            self._deadline = time.monotonic() + seconds
            self._cond.notify()
        try:
            yield
        except Exception as exc:
            if self.expired:
                raise PeerHung(f"{what} took over {seconds:g} s; servers stopped") from exc
            raise
        finally:
            with self._cond:
                self._deadline = None
        if self.expired:
            raise PeerHung(f"{what} took over {seconds:g} s; servers stopped")

    def close(self) -> None:
        """Stop watching."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _watch(self) -> None:
        with self._cond:
            while not self._closed and not self.expired:
                if self._deadline is None:
                    self._cond.wait()
                elif time.monotonic() < self._deadline:
                    self._cond.wait(self._deadline - time.monotonic())
                else:
                    self.expired = True
        if self.expired:
            try:
                self._on_expire()
            except Exception:  # the thread's last act: say so rather than die silently
                logger.exception("watchdog could not stop the servers")


def connect_guarded(name: str, connect: Callable[[], Client], watchdog: Watchdog) -> GuardedClient:
    """`connect()` under the watchdog; its failure as a BenchError naming the transport."""
    what = f"connecting {name}"
    try:
        with watchdog.guard(what):
            client = connect()
    except BenchError:
        raise
    except Exception as exc:
        raise BenchError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
    return GuardedClient(name, client, watchdog)


class GuardedClient:
    """A client whose every call is watched, its failures reported as BenchError."""

    def __init__(self, name: str, client: Client, watchdog: Watchdog) -> None:
        self._name = name
        self._client = client
        self._watchdog = watchdog

    @property
    def inner(self) -> Client:
        """The client it guards, for checks outside the timed calls."""
        return self._client

    def echo(self, payload: Payload) -> Payload:
        """As `Client.echo`."""
        with self._failures(f"{self._name} round trip of {payload.nbytes} bytes"):
            return self._client.echo(payload)

    def round_trips(self, payload: Payload, reps: int) -> list[int]:
        """As `Client.round_trips`."""
        with self._failures(f"{self._name}: {reps} round trips of {payload.nbytes} bytes"):
            return self._client.round_trips(payload, reps)

    def close(self) -> None:
        """As `Client.close`; a failure to close is not worth losing the report over."""
        with contextlib.suppress(Exception):
            self._client.close()

    @contextlib.contextmanager
    def _failures(self, what: str) -> Iterator[None]:
        try:
            with self._watchdog.guard(what):
                yield
        except BenchError:
            raise
        except Exception as exc:
            raise BenchError(f"{what} failed: {type(exc).__name__}: {exc}") from exc

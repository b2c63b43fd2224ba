"""Holds a link keeps for descriptors it passed on but does not own.

A process that forwards a descriptor of another process's arena (a sidecar relaying a
caller's tensor to a same-host replica, a replica answering with a view of its input)
must keep its own hold on that lease until the next peer is done with it: otherwise the
owner could reuse the memory while the peer still reads it. The link that sent the
descriptor keeps the object holding it (the `PeerRefs` of the message it came in) until
the peer releases the descriptor, the link closes, or `timeout` passes (the lease timeout,
as for any lease). Thread-safe: releases come from the event loop, sends from handlers.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

RefKey = tuple[str, int, int]  # arena, slot, generation


@dataclass(slots=True)
class _Hold:
    key: RefKey
    at: float
    keeper: object
    live: bool = True


class KeptRefs:
    """The keepers of one link's forwarded descriptors, in the order they were sent."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._lock = threading.Lock()
        self._by_key: dict[RefKey, collections.deque[_Hold]] = {}
        self._order: collections.deque[_Hold] = collections.deque()

    def __len__(self) -> int:
        with self._lock:
            return sum(len(holds) for holds in self._by_key.values())

    def add(self, refs: Sequence[Sequence[Any]], keeper: object, now: float) -> list[object]:
        """Keep `keeper` until each of `refs` is released; returns expired keepers to drop."""
        with self._lock:
            for ref in refs:
                hold = _Hold((ref[0], ref[1], ref[2]), now, keeper)
                self._by_key.setdefault(hold.key, collections.deque()).append(hold)
                self._order.append(hold)
            return self._expire(now)

    def release(self, refs: Sequence[Sequence[Any]]) -> list[object]:
        """The peer released these descriptors: the keepers to drop (outside any lock)."""
        dropped = []
        with self._lock:
            for ref in refs:
                key = (ref[0], ref[1], ref[2])
                holds = self._by_key.get(key)
                if not holds:
                    continue
                hold = holds.popleft()
                dropped.append(hold.keeper)
                hold.live, hold.keeper = False, None  # the entry lingers in _order until expiry
                if not holds:
                    del self._by_key[key]
        return dropped

    def clear(self) -> list[object]:
        """The link closed: every keeper, to drop."""
        with self._lock:
            dropped = [h.keeper for h in self._order if h.live]
            self._by_key.clear()
            self._order.clear()
        return dropped

    def _expire(self, now: float) -> list[object]:
        dropped = []
        while self._order and (not self._order[0].live or now - self._order[0].at > self._timeout):
            hold = self._order.popleft()
            if hold.live:
                dropped.append(hold.keeper)
                hold.live, hold.keeper = False, None
                holds = self._by_key[hold.key]
                holds.remove(hold)
                if not holds:
                    del self._by_key[hold.key]
        return dropped

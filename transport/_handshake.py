"""Shared-memory negotiation for one link, with no I/O: it says what to send and decides.

Each side's HELLO carries its domain token, its process id and a probe: a descriptor of a
lease holding a random nonce. A side whose token matches reads the peer's probe and
answers with the nonce it read (or None). A side may send descriptors only after the
peer answered with the right nonce (the peer can read its arenas), and accepts
descriptors only from a peer whose probe it read itself. Anything else — another
directory, another token, an unreadable probe, no answer — leaves the link on the network
path, silently and correctly.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from ._errors import FrameError
from ._frame import Message
from ._header import Header
from ._kept import KeptRefs
from ._shm import LinkCounters, Ref, ShmDomain, ShmPlacer, check_ref, header_refs

logger = logging.getLogger(__name__)

_PROC: Final = re.compile(r"^[0-9a-f]{16}$")
_PROBE_HOLDER: Final = "probe"


def _is_ref(value: object) -> bool:
    """True for a well-formed descriptor (a peer's release may hold anything)."""
    try:
        check_ref(value)
    except FrameError:
        return False
    return True


_refs = header_refs


class ShmHandshake:
    """One link's shared-memory state: settled once both directions are decided."""

    def __init__(self, domain: ShmDomain | None, release: Callable[[list[Ref]], None]) -> None:
        self.domain = domain
        self._release = release
        self._probe: tuple[Ref, bytes] | None = None
        self._peer: str | None = None  # the peer's process id, from its HELLO
        self._readable = False  # we read the peer's probe: its descriptors are honoured
        self.placer: ShmPlacer | None = None  # set once the peer read ours
        self.counters = LinkCounters()  # what this link moved through shared memory
        # Holds on descriptors of third processes this link passed on (see _kept).
        self.kept = KeptRefs(domain.lease_timeout if domain is not None else 0.0)
        self.is_settled = False
        try:
            self.settled: asyncio.Future[None] | None = asyncio.get_running_loop().create_future()
        except RuntimeError:  # a blocking link: it polls `is_settled`
            self.settled = None

    def hello(self) -> dict[str, object]:
        """The fields our HELLO carries."""
        if self.domain is None:
            self.settle()
            return {}
        try:
            self._probe = self.domain.probe()
        except FrameError:
            self.settle()
            return {}
        d = self.domain
        return {"shm": {"domain": d.token, "proc": d.proc, "probe": self._probe[0]}}

    def on_peer_hello(self, info: object) -> dict[str, object] | None:
        """Read the peer's probe; returns the SHM frame fields to answer with, if any."""
        if not isinstance(info, dict):
            self.settle()  # the peer has no shared memory
            return None
        proc = info.get("proc")
        if self.domain is None or info.get("domain") != self.domain.token:
            self.settle()
            return {"ack": None}
        if not isinstance(proc, str) or not _PROC.match(proc):
            self.settle()
            return {"ack": None}
        self._peer = proc
        try:
            nonce = self.domain.read_probe(info.get("probe"), proc)
        except (FrameError, OSError) as exc:
            logger.debug("shared-memory probe unreadable", extra={"error": str(exc)})
            return {"ack": None}
        self._readable = True
        return {"ack": nonce}

    def on_control(self, fields: dict[str, object]) -> None:
        """An SHM frame from the peer: its answer to our probe, or releases."""
        if "ack" in fields:
            if (
                self._probe is not None
                and self._peer is not None
                and self.domain is not None
                and fields["ack"] == self._probe[1]
            ):
                self.placer = ShmPlacer(self.domain, self._peer, self.counters, kept=self.kept)
                logger.debug("shared memory negotiated", extra={"peer": self._peer})
            self.settle()
        releases = fields.get("release")
        if isinstance(releases, list) and self.domain is not None and self._peer is not None:
            self.domain.release(self._peer, releases)
            own = self.domain.owns
            dropped = self.kept.release([r for r in releases if _is_ref(r) and not own(r[0])])
            del dropped  # the messages they kept held go now, outside the table's lock

    def settle(self) -> None:
        """Decide now: what is not negotiated yet stays on the network path."""
        if self._probe is not None and self.domain is not None:
            self.domain.release(_PROBE_HOLDER, [self._probe[0]])
            self._probe = None
        if not self.is_settled:
            self.is_settled = True
            if self.settled is not None and not self.settled.done():
                self.settled.set_result(None)

    def adopt(self, message: Message) -> Message:
        """`message` with its descriptors validated and mapped; raises FrameError."""
        refs = _refs(message.header)
        if not refs:
            return message
        if self.domain is None or self._peer is None or not self._readable:
            raise FrameError(
                "message carries shared-memory descriptors, but this link did not negotiate "
                "shared memory with its peer"
            )
        holder, views = self.domain.adopt(refs, self._peer, self._release)
        self.counters.received += sum(ref[5] for ref in refs)
        if message.header.body_ref is not None:
            return replace(message, shared=tuple(views[:-1]), shared_body=views[-1], holder=holder)
        return replace(message, shared=tuple(views), holder=holder)

    def forward(self, header: Header, keeper: object) -> bool:
        """Prepare to relay `header`'s descriptors as they are; see ShmPlacer.forward."""
        if not _refs(header):
            return True
        return self.placer is not None and self.placer.forward(header, keeper)

    def close(self) -> None:
        """The link is gone: let go of every descriptor it passed on."""
        dropped = self.kept.clear()
        del dropped

    def unplace(self, header: Header) -> None:
        """Take back the descriptors of a header that was never sent."""
        if self.domain is None or self._peer is None:
            return
        refs = _refs(header)
        if refs:
            self.domain.unplace(refs, self._peer)

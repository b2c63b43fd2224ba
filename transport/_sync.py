"""A blocking link for scripts: one request at a time per link, over a plain socket.

The same frames as the asyncio link, driven by the same sans-IO decoder. A thread that
blocks on its own socket needs no event loop: starting and stopping a loop per call
costs more than a small request's whole round trip (uvloop even builds a socket pair
for signals on each run), and handing calls to a loop thread costs two thread wake-ups.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import replace

from ._errors import Cancelled, DeadlineExceeded, FrameError, LinkClosed
from ._frame import (
    FrameDecoder,
    GoAway,
    Hello,
    Message,
    ShmControl,
    data_frames,
    head_frame,
    hello_frame,
    shm_frame,
)
from ._handshake import ShmHandshake
from ._header import Header, Kind, check_header_size, pack_header
from ._limits import Limits
from ._link import BodyPart, check_reply, is_drain, parse_address
from ._pool import BufferPool
from ._shm import Ref, ShmDomain
from ._tensors import Placer
from ._tls import Tls, check_identity

_IOV_MAX = 512  # sendmsg takes at most IOV_MAX (1024 on Linux) buffers per call


class SyncLink:
    """The calling end of a link, blocking; use from one thread at a time.

    A link that failed (closed by the peer, protocol error, interrupted call) raises
    LinkClosed from then on; open a new one.
    """

    def __init__(
        self, sock: socket.socket, limits: Limits, pool: BufferPool, shm: ShmDomain | None = None
    ) -> None:
        self.limits = limits
        self._releases: collections.deque[Ref] = collections.deque()
        self._backlog: collections.deque[object] = collections.deque()
        self._timeout: float | None = sock.gettimeout()
        self.shm = ShmHandshake(shm, self._releases.extend)
        self._sock = sock
        self._decoder = FrameDecoder(limits, pool)
        self._ids = itertools.count(1)
        self._broken: LinkClosed | None = None
        self._drained: LinkClosed | None = None  # the peer drains: close after this reply
        self._peer = _peer_name(sock)

    @classmethod
    def connect(
        cls,
        address: str,
        *,
        limits: Limits | None = None,
        pool: BufferPool | None = None,
        shm: ShmDomain | None = None,
        timeout: float = 10.0,
        tls: Tls | None = None,
        expect_identity: str | None = None,
    ) -> SyncLink:
        """Open a link to "host:port" or "unix:/path" and exchange HELLO.

        With `tls`, a TCP link is mutual TLS (and with `expect_identity`, the peer must
        present that SPIFFE URI). Raises LinkClosed if the peer cannot be reached, does
        not speak the protocol or is not who it should be.
        """
        target = parse_address(address)
        try:
            if isinstance(target, str):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                sock.connect(target)
            else:
                sock = socket.create_connection(target, timeout=timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if tls is not None:
                    sock = _secure(sock, tls, expect_identity, address)
        except OSError as exc:
            raise LinkClosed(f"cannot connect to {address}: {exc}") from exc
        link = cls(sock, limits or Limits(), pool or BufferPool(), shm)
        deadline = time.monotonic() + timeout
        try:
            link._send_all([hello_frame(**link.shm.hello())], deadline)
            hello = False
            while not (hello and link.shm.is_settled):
                event = link._next_event(deadline)
                if isinstance(event, Hello):
                    hello = True
                    answer = link.shm.on_peer_hello(event.fields.get("shm"))
                    if answer is not None:
                        link._send_all([shm_frame(**answer)], deadline)
                elif isinstance(event, ShmControl):
                    link.shm.on_control(event.fields)
                else:
                    link._backlog.appendleft(event)  # early, for the first request
                    break
        except (LinkClosed, DeadlineExceeded) as exc:
            link.close()
            raise LinkClosed(f"cannot connect to {address}: {exc}") from exc
        return link

    @property
    def placer(self) -> Placer | None:
        """Where to put large tensors for this peer: shared memory once negotiated."""
        return self.shm.placer

    @property
    def closed(self) -> bool:
        """True once the link can carry no more requests."""
        return self._broken is not None

    def request(
        self, header: Header, parts: Sequence[BodyPart] = (), *, timeout: float | None = None
    ) -> Message:
        """Send a request and block for its reply; as StreamLink.request, with a timeout."""
        if self._broken is not None:
            raise self._broken
        packed_header = header if timeout is None else replace(header, timeout=timeout)
        packed = pack_header(packed_header)
        check_header_size(len(packed), self.limits)
        stream = next(self._ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        sent = usable = False
        try:
            self._flush_releases()
        except BaseException:
            self.shm.unplace(header)
            raise
        try:
            self._send_all(head_frame(stream, packed), deadline)
            if header.body_len:
                for frame in data_frames(stream, parts, self.limits.chunk_size):
                    self._send_all(frame, deadline)
            sent = True
            reply = self._await_reply(stream, deadline)
            usable = True
        except DeadlineExceeded:
            # Only a request that went out whole leaves the link in step: cancel it and
            # drop its late reply when it comes. A partly sent frame ends the link.
            usable = sent and self._cancel(stream)
            raise
        except Cancelled:
            usable = True
            raise
        finally:
            if not usable:
                self._fail(LinkClosed(f"link to {self._peer} was interrupted mid-request"))
        if self._drained is not None:
            self._fail(self._drained)
        return check_reply(reply, self._peer)

    def ping(self, timeout: float = 5.0) -> float:
        """Round-trip a PING; returns the seconds it took. Raises DeadlineExceeded, LinkClosed."""
        start = time.perf_counter()
        self.request(Header(Kind.PING), timeout=timeout)
        return time.perf_counter() - start

    def close(self) -> None:
        """Close the socket; idempotent."""
        if self._broken is None:
            with contextlib.suppress(LinkClosed, DeadlineExceeded):
                self._flush_releases()
        self._fail(LinkClosed(f"link to {self._peer} is closed"))

    def _set_timeout(self, deadline: float | None) -> None:
        # settimeout is an ioctl each time; without a deadline it rarely changes.
        timeout = _remaining(deadline)
        if timeout is not None or self._timeout is not None:
            self._sock.settimeout(timeout)
            self._timeout = timeout

    def _flush_releases(self) -> None:
        refs = []
        while self._releases:
            refs.append(self._releases.popleft())
        if refs:
            self._send_all([shm_frame(release=refs)], None)

    def _next_event(self, deadline: float | None) -> object:
        # One read can bring several frames; those after the one we wanted wait here, so
        # a release or a ping that came with a reply is not lost.
        while not self._backlog:
            self._backlog.extend(self._receive(deadline))
        return self._backlog.popleft()

    def _await_reply(self, stream: int, deadline: float | None) -> Message:
        while True:
            event = self._next_event(deadline)
            if isinstance(event, ShmControl):
                self.shm.on_control(event.fields)
            elif isinstance(event, GoAway):
                if is_drain(event.error):  # our request is still served; no new ones here
                    self._drained = LinkClosed(f"{self._peer} is draining: {event.error.message}")
                    continue
                raise self._fail(LinkClosed(f"{self._peer} closed the link: {event.error.message}"))
            elif isinstance(event, Message):
                kind = event.header.kind
                if kind == Kind.PING:
                    self._send_all(head_frame(event.stream, pack_header(Header(Kind.PONG))), None)
                elif event.stream == stream and kind in (Kind.RESPONSE, Kind.ERROR, Kind.PONG):
                    reply = self.shm.adopt(event)  # before releases that came after it
                    self._drain_controls()
                    return reply
                elif event.stream == stream and kind == Kind.CANCEL:
                    raise Cancelled(f"{self._peer} cancelled the request")
                elif event.header.tensors:
                    with contextlib.suppress(FrameError):  # a late reply: map, drop, release
                        self.shm.adopt(event)
                # anything else answers a request we gave up on: dropped, buffer returned

    def _drain_controls(self) -> None:
        """Act on releases that arrived with the reply, without waiting for more."""
        while self._backlog and isinstance(self._backlog[0], ShmControl):
            control = self._backlog.popleft()
            assert isinstance(control, ShmControl)
            self.shm.on_control(control.fields)

    def _receive(self, deadline: float | None) -> list[object]:
        self._set_timeout(deadline)
        try:
            n = self._sock.recv_into(self._decoder.get_buffer())
        except TimeoutError:
            raise DeadlineExceeded(f"no reply from {self._peer} before the deadline") from None
        except OSError as exc:
            raise self._fail(LinkClosed(f"link to {self._peer} failed: {exc}")) from exc
        try:
            if n == 0:
                self._decoder.eof()
                raise self._fail(LinkClosed(f"{self._peer} closed the link"))
            return list(self._decoder.buffer_updated(n))
        except FrameError as exc:
            raise self._fail(LinkClosed(f"protocol error on link to {self._peer}: {exc}")) from exc

    def _send_all(self, buffers: Sequence[BodyPart], deadline: float | None) -> None:
        views = [memoryview(b).cast("B") for b in buffers]
        self._set_timeout(deadline)
        try:
            if isinstance(self._sock, ssl.SSLSocket):  # no sendmsg: one record per buffer
                for view in views:
                    self._sock.sendall(view)
                return
            while views:
                sent = self._sock.sendmsg(views[:_IOV_MAX])
                while views and sent >= views[0].nbytes:
                    sent -= views[0].nbytes
                    views.pop(0)
                if sent:
                    views[0] = views[0][sent:]
        except TimeoutError:
            raise DeadlineExceeded(f"{self._peer} did not take the request in time") from None
        except OSError as exc:
            raise self._fail(LinkClosed(f"link to {self._peer} failed: {exc}")) from exc

    def _cancel(self, stream: int) -> bool:
        """Tell the peer to stop; True if that could be said."""
        try:
            self._send_all(head_frame(stream, pack_header(Header(Kind.CANCEL))), None)
        except LinkClosed:
            return False
        return True

    def _fail(self, error: LinkClosed) -> LinkClosed:
        if self._broken is None:
            self._broken = error
            self._decoder.close()
            self._sock.close()
            self.shm.close()
        return self._broken


def _secure(
    sock: socket.socket, tls: Tls, expect_identity: str | None, address: str
) -> ssl.SSLSocket:
    """`sock` after a mutual-TLS handshake with a peer that is `expect_identity` (if given)."""
    try:
        secure = tls.client_context().wrap_socket(sock)
    except BaseException:
        sock.close()
        raise
    try:
        check_identity(secure.getpeercert(), expect_identity, address)
    except LinkClosed:
        secure.close()
        raise
    return secure


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(deadline - time.monotonic(), 0.0)


def _peer_name(sock: socket.socket) -> str:
    try:
        name = sock.getpeername()
    except OSError:
        return "peer"
    return f"{name[0]}:{name[1]}" if isinstance(name, tuple) else f"unix:{name}"

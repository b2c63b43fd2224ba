"""Mutual TLS for links: certificates from files, reloaded when they change, SPIFFE identities.

Both ends present a certificate signed by a CA in the bundle and verify the other's. A
peer is known by the URI SANs of its certificate (`spiffe://<trust domain>/service/<name>`),
not by host name: mesh peers are reached by address, and what matters is which service
is on the other end. `Tls` holds the current server and client contexts and swaps in new
ones when any of the three files changes; connections already open keep theirs, the next
handshake uses the new ones (the server's through its SNI callback, which runs first in
every handshake). Reading the files is blocking I/O: it happens in the constructor and in
`refresh()`, which `watch()` runs in a worker thread; handing out a context never touches
the disk.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
from dataclasses import dataclass
from typing import Any, Final

from ._errors import LinkClosed

SPIFFE: Final = "spiffe://"
_SERVICE_PATH: Final = "/service/"


@dataclass(frozen=True)
class TlsFiles:
    """Where this end's certificate chain, its key and the trusted CA bundle are (PEM)."""

    cert: str
    key: str
    ca: str


class Tls:
    """The TLS contexts for one process's links, kept in step with `files`.

    Raises LinkClosed (from the constructor and `current`) when the files cannot be read
    or do not make a usable context; after a successful start a bad rewrite is ignored
    and the last good contexts stay in use.
    """

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._server, self._client = _contexts(files)
        self.reloads = 0
        # The context a server socket starts with; its SNI callback moves each new
        # handshake onto the current one, so a reload reaches the listener it was bound with.
        self.listener_context = _server_context(files)
        self.listener_context.sni_callback = self._pick_server_context

    def server_context(self) -> ssl.SSLContext:
        """The context for new server-side handshakes."""
        return self._server

    def client_context(self) -> ssl.SSLContext:
        """The context for new outgoing links."""
        return self._client

    async def watch(self, interval: float = 5.0) -> None:
        """Reload the contexts whenever the files change, checking every `interval` seconds.

        Runs until cancelled; the checks run in a worker thread.
        """
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.refresh)

    def _pick_server_context(
        self, sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, context: ssl.SSLContext
    ) -> None:
        sock.context = self.server_context()

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        stamps = []
        for path in (self.files.cert, self.files.key, self.files.ca):
            try:
                st = os.stat(path)
            except OSError:
                stamps.append((0, 0, 0))
            else:
                stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(stamps)

    def refresh(self) -> bool:
        """Load the files again if any changed (blocking); True if new contexts are in use.

        A file that cannot be loaded (half written, wrong key) leaves the last good contexts.
        """
        stamp = self._stat()
        if stamp == self._stamp:
            return False
        with self._lock:
            if stamp == self._stamp:
                return False
            try:
                server, client = _contexts(self.files)
            except LinkClosed:
                return False  # half-written or wrong: keep serving with the last good pair
            self._server, self._client, self._stamp = server, client, stamp
            self.reloads += 1
            return True


def _contexts(files: TlsFiles) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    return _server_context(files), _client_context(files)


def _server_context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load(context, files)
    context.verify_mode = ssl.CERT_REQUIRED  # mutual: a client without a certificate fails
    return context


def _client_context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _load(context, files)
    # Peers are reached by address and known by their SPIFFE URI, checked after the
    # handshake (expect_identity): the chain is verified, the host name is not.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _load(context: ssl.SSLContext, files: TlsFiles) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(files.cert, files.key)
        context.load_verify_locations(cafile=files.ca)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise LinkClosed(
            f"cannot load TLS files (cert {files.cert}, key {files.key}, ca {files.ca}): {exc}"
        ) from exc


def identity_uri(trust_domain: str, service: str) -> str:
    """The SPIFFE ID a service's certificate carries: spiffe://<trust domain>/service/<name>."""
    return f"{SPIFFE}{trust_domain}{_SERVICE_PATH}{service}"


def peer_identities(peercert: dict[str, Any] | None) -> tuple[str, ...]:
    """The SPIFFE URIs among a verified peer certificate's subject alternative names."""
    if not peercert:
        return ()
    return tuple(
        value
        for kind, value in peercert.get("subjectAltName", ())
        if kind == "URI" and isinstance(value, str) and value.startswith(SPIFFE)
    )


def service_of(identity: str, trust_domain: str | None = None) -> str | None:
    """The service name in a `spiffe://<domain>/service/<name>` URI (of `trust_domain`)."""
    if not identity.startswith(SPIFFE):
        return None
    domain, _, path = identity[len(SPIFFE) :].partition("/")
    if trust_domain is not None and domain != trust_domain:
        return None
    name = ("/" + path).removeprefix(_SERVICE_PATH)
    if name == "/" + path or not name or "/" in name:
        return None
    return name


def check_identity(peercert: dict[str, Any] | None, expected: str | None, peer: str) -> None:
    """Raise LinkClosed unless the peer's certificate names `expected` (a SPIFFE URI)."""
    if expected is None:
        return
    found = peer_identities(peercert)
    if expected not in found:
        raise LinkClosed(
            f"{peer} presented {', '.join(found) or 'no SPIFFE identity'}, not {expected}"
        )

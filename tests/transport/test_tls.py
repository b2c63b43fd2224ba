"""Mutual TLS links with real certificates: identities, refusals, authorization, reloads."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from tests.pki import TRUST_DOMAIN, Pki
from transport import (
    BufferPool,
    ErrorCode,
    Header,
    LinkClosed,
    LinkServer,
    RemoteError,
    SyncLink,
    Tls,
    TlsFiles,
    connect,
    identity_uri,
    service_of,
)

from .test_link import LIMITS, echo, request, tensors_of

pytestmark = pytest.mark.timeout(30)

SERVER = identity_uri(TRUST_DOMAIN, "model")
CALLER = identity_uri(TRUST_DOMAIN, "pipeline")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
def tls(pki: Pki) -> dict[str, Tls]:
    """Loaded contexts for each identity the tests use (file I/O here, not in the loop)."""
    return {name: Tls(pki.issue(name)) for name in ("model", "pipeline", "impostor", "intruder")}


@pytest.fixture
async def serve_tls() -> AsyncIterator[Callable[..., Awaitable[tuple[LinkServer, str]]]]:
    servers: list[LinkServer] = []

    async def _start(tls: Tls, **kwargs: object) -> tuple[LinkServer, str]:
        server = LinkServer(echo, LIMITS, BufferPool(), tls=tls, **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server, await server.listen_tcp("127.0.0.1", 0)

    yield _start
    for server in servers:
        await server.aclose()


async def test_a_mutual_tls_link_carries_requests_and_knows_both_identities(
    tls: dict[str, Tls], serve_tls: Callable[..., Awaitable[tuple[LinkServer, str]]]
) -> None:
    seen: list[tuple[str, ...]] = []

    def authorize(identities: tuple[str, ...], header: Header) -> str | None:
        seen.append(identities)
        return None

    _, address = await serve_tls(tls["model"], authorize=authorize)
    link = await connect(address, limits=LIMITS, tls=tls["pipeline"], expect_identity=SERVER)
    try:
        x = np.arange(3_000_000, dtype=np.float32)  # several frames, through TLS records
        out = tensors_of(await link.request(*request({"x": x})))
        np.testing.assert_array_equal(out["x"], x)
        assert link.peer_identities == (SERVER,)
    finally:
        await link.aclose()
    assert seen == [(CALLER,)]
    assert service_of(CALLER, TRUST_DOMAIN) == "pipeline"


async def test_a_plaintext_client_gets_no_link_to_a_tls_listener(
    tls: dict[str, Tls], serve_tls: Callable[..., Awaitable[tuple[LinkServer, str]]]
) -> None:
    _, address = await serve_tls(tls["model"])
    with pytest.raises(LinkClosed):
        await connect(address, limits=LIMITS, timeout=3.0)


@pytest.fixture
def strangers(tmp_path: Path, pki: Pki) -> tuple[Tls, Tls]:
    """Callers with a certificate another CA signed: one trusting only that CA, one ours."""
    files = Pki(tmp_path, name="other").issue("pipeline")
    return Tls(files), Tls(TlsFiles(cert=files.cert, key=files.key, ca=str(pki.bundle)))


async def test_a_client_from_another_ca_is_refused_and_refuses_the_server(
    strangers: tuple[Tls, Tls],
    tls: dict[str, Tls],
    serve_tls: Callable[..., Awaitable[tuple[LinkServer, str]]],
) -> None:
    server, address = await serve_tls(tls["model"])
    distrusting, distrusted = strangers
    with pytest.raises(LinkClosed, match="certificate verify failed"):
        await connect(address, limits=LIMITS, tls=distrusting)
    with pytest.raises(LinkClosed):  # the server ends the handshake (TLS 1.3: after it began)
        await _call_once(address, distrusted)
    assert server.in_flight == 0


async def test_a_server_with_the_wrong_identity_is_not_trusted(
    tls: dict[str, Tls], serve_tls: Callable[..., Awaitable[tuple[LinkServer, str]]]
) -> None:
    _, address = await serve_tls(tls["impostor"])
    with pytest.raises(LinkClosed, match=r"presented spiffe://mesh\.test/service/impostor"):
        await connect(address, limits=LIMITS, tls=tls["pipeline"], expect_identity=SERVER)


async def test_an_unauthorized_caller_gets_permission_denied_and_nothing_runs(
    tls: dict[str, Tls], serve_tls: Callable[..., Awaitable[tuple[LinkServer, str]]]
) -> None:
    def authorize(identities: tuple[str, ...], header: Header) -> str | None:
        if CALLER in identities:
            return None
        return f"{', '.join(identities) or 'an anonymous caller'} may not call {header.service}"

    server, address = await serve_tls(tls["model"], authorize=authorize)
    intruder = await connect(address, limits=LIMITS, tls=tls["intruder"])
    friend = await connect(address, limits=LIMITS, tls=tls["pipeline"])
    try:
        with pytest.raises(RemoteError) as refused:
            await intruder.request(*request({"x": np.zeros(4)}))
        assert refused.value.code is ErrorCode.PERMISSION_DENIED
        assert "spiffe://mesh.test/service/intruder may not call svc" in refused.value.message
        out = tensors_of(await friend.request(*request({"x": np.ones(4)})))
        np.testing.assert_array_equal(out["x"], np.ones(4))
        assert server.in_flight == 0
    finally:
        await intruder.aclose()
        await friend.aclose()


async def test_a_blocking_link_speaks_mutual_tls(
    tls: dict[str, Tls], serve_tls: Callable[..., Awaitable[tuple[LinkServer, str]]]
) -> None:
    _, address = await serve_tls(tls["model"])
    caller = tls["pipeline"]

    def call() -> np.ndarray:
        link = SyncLink.connect(address, limits=LIMITS, tls=caller, expect_identity=SERVER)
        try:
            x = np.arange(1_000_000, dtype=np.int64)
            reply = link.request(*request({"x": x}), timeout=10.0)
            out = tensors_of(reply)["x"].copy()
            np.testing.assert_array_equal(out, x)
            return out
        finally:
            link.close()

    await asyncio.to_thread(call)

    def wrong() -> None:
        SyncLink.connect(address, limits=LIMITS, tls=caller, expect_identity=CALLER)

    with pytest.raises(LinkClosed, match=r"presented spiffe://mesh\.test/service/model"):
        await asyncio.to_thread(wrong)


@pytest.fixture
def rotation(pki: Pki) -> tuple[TlsFiles, TlsFiles]:
    """The live files a server loads, and the next certificate (another identity)."""
    return pki.issue("model", stem="live"), pki.issue("model-v2", stem="next")


async def test_rewritten_certificates_are_used_for_new_links_and_old_links_stay_up(
    tls: dict[str, Tls],
    rotation: tuple[TlsFiles, TlsFiles],
    serve_tls: Callable[..., Awaitable[tuple[LinkServer, str]]],
) -> None:
    live, rotated = rotation
    server_tls = await asyncio.to_thread(Tls, live)
    watcher = asyncio.create_task(server_tls.watch(interval=0.05))
    _, address = await serve_tls(server_tls)
    client = tls["pipeline"]
    old = await connect(address, limits=LIMITS, tls=client, expect_identity=SERVER)
    try:
        await asyncio.to_thread(_replace, rotated, live)  # moved over the live files
        async with asyncio.timeout(5):
            while server_tls.reloads < 1:  # noqa: ASYNC110  # the watcher has no event
                await asyncio.sleep(0.02)
        new = await connect(address, limits=LIMITS, tls=client)
        try:
            assert new.peer_identities == (identity_uri(TRUST_DOMAIN, "model-v2"),)
            for link in (old, new):  # the link made before the rotation still works
                out = tensors_of(await link.request(*request({"x": np.ones(3)})))
                np.testing.assert_array_equal(out["x"], np.ones(3))
        finally:
            await new.aclose()
        # A half-written certificate is not loaded: the last good one stays in use.
        await asyncio.to_thread(_truncate, live.cert)
        assert not await asyncio.to_thread(server_tls.refresh)
        again = await connect(address, limits=LIMITS, tls=client)
        assert again.peer_identities == (identity_uri(TRUST_DOMAIN, "model-v2"),)
        await again.aclose()
        assert server_tls.reloads == 1
    finally:
        watcher.cancel()
        await old.aclose()


def test_unreadable_tls_files_are_a_clear_error(tmp_path: Path) -> None:
    missing = TlsFiles(cert=str(tmp_path / "no.pem"), key=str(tmp_path / "no.key"), ca="x")
    with pytest.raises(LinkClosed, match=r"cannot load TLS files \(cert .*no\.pem"):
        Tls(missing)


def test_service_of_reads_only_service_identities_of_the_trust_domain() -> None:
    assert service_of("spiffe://mesh.test/service/a", "mesh.test") == "a"
    assert service_of("spiffe://other/service/a", "mesh.test") is None
    assert service_of("spiffe://mesh.test/ns/x/sa/y") is None
    assert service_of("spiffe://mesh.test/service/a/b") is None
    assert service_of("https://mesh.test/service/a") is None


def _replace(source: TlsFiles, target: TlsFiles) -> None:
    # Key first, then certificate, each by rename: a reader sees whole files.
    for src, dst in ((source.key, target.key), (source.cert, target.cert)):
        shutil.copyfile(src, dst + ".tmp")
        os.replace(dst + ".tmp", dst)
    # Make sure the change shows even on filesystems with coarse timestamps.
    stat = os.stat(target.cert)
    os.utime(target.cert, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


async def _call_once(address: str, tls: Tls) -> None:
    link = await connect(address, limits=LIMITS, tls=tls, timeout=3.0)
    try:
        async with asyncio.timeout(3.0):
            await link.request(*request({"x": np.zeros(4)}))
    finally:
        await link.aclose()


def _truncate(path: str) -> None:
    Path(path).write_text("-----BEGIN CERTIFICATE-----\ntruncated")
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))

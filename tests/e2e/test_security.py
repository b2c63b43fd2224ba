"""Sidecars with mutual TLS and an authorization policy, and the admin listener's token."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sidecar import BlockingMeshClient, RemoteError, Unavailable
from tests.pki import TRUST_DOMAIN, Pki
from transport import ErrorCode, Header, Kind, LinkClosed, SyncLink, Tls, TlsFiles
from transport import RemoteError as LinkRemoteError

from ..conftest import ServeProcess, child_env, wait_for
from .conftest import Sidecar
from .test_daemon import DOUBLER, _app

pytestmark = pytest.mark.timeout(90)


def tls_flags(files: TlsFiles) -> list[str]:
    return ["--tls-cert", files.cert, "--tls-key", files.key, "--tls-ca", files.ca,
            "--trust-domain", TRUST_DOMAIN]  # fmt: skip


def _routable(client: BlockingMeshClient) -> Callable[[], bool]:
    def ok() -> bool:
        try:
            client.infer("toy", {"x": np.ones(2)}, timeout=5)
        except (Unavailable, TimeoutError):
            return False
        return True

    return ok


def test_sidecars_talk_mutual_tls_and_the_policy_says_who_may_call(
    tmp_path: Path,
    serve_process: Callable[[str], ServeProcess],
    sidecars: Callable[..., Sidecar],
) -> None:
    pki = Pki(tmp_path)
    policy = json.dumps({"toy": ["pipeline:infer"]})
    replica = serve_process(DOUBLER)
    front = sidecars(
        "toy", app=_app(replica), extra=[*tls_flags(pki.issue("toy")), "--authorization", policy]
    )
    local = ["--local-mesh-addr", "127.0.0.1:0"]
    caller = sidecars("pipeline", extra=[*tls_flags(pki.issue("pipeline")), *local])
    intruder = sidecars("scraper", extra=[*tls_flags(pki.issue("scraper")), *local])

    with BlockingMeshClient(caller.info["local_mesh"]) as client:
        wait_for(_routable(client), 20, "a request through two TLS sidecars")
        big = np.arange(1 << 20, dtype=np.float32)  # by reference: the same shm directory
        np.testing.assert_array_equal(client.infer("toy", {"x": big})["y"], big * 2)

    refusals: list[RemoteError] = []
    with BlockingMeshClient(intruder.info["local_mesh"]) as client:

        def refused() -> bool:
            try:
                client.infer("toy", {"x": np.ones(2)}, timeout=5)
            except RemoteError as exc:
                refusals.append(exc)
                return exc.code is not ErrorCode.UNAVAILABLE  # not yet discovered
            except (Unavailable, TimeoutError):
                return False
            raise AssertionError("an unauthorized caller was served")

        wait_for(refused, 20, "the intruder's request to be answered")
    assert refusals[-1].code is ErrorCode.PERMISSION_DENIED
    assert "scraper may not call method 'infer' of toy (authorization policy)" in str(refusals[-1])
    assert front.metric("arrowmesh_denied_total", service="toy", caller="scraper") >= 1

    # The mesh listener itself takes no plaintext link, and peers cannot relay through it.
    with pytest.raises(LinkClosed):
        SyncLink.connect(front.mesh, timeout=5).request(Header(Kind.PING), timeout=5)
    link = SyncLink.connect(front.mesh, tls=Tls(pki.issue("pipeline", stem="relay")))
    try:
        with pytest.raises(LinkRemoteError, match="pipeline may not use the sidecar of toy"):
            link.request(Header(Kind.REQUEST, "elsewhere", "infer"), timeout=5)
    finally:
        link.close()
    for sidecar in (intruder, caller, front):
        assert sidecar.stop() == 0
    assert replica.stop() == 0
    log = caller.log.read_text()
    assert "mesh traffic is mutual TLS" in log and "PLAINTEXT" not in log


def test_a_plaintext_sidecar_says_so_loudly(sidecars: Callable[..., Sidecar]) -> None:
    plain = sidecars("pipeline")
    assert plain.stop() == 0
    assert "mesh traffic is PLAINTEXT" in plain.log.read_text()


def test_the_admin_token_guards_everything_but_the_probes(sidecars: Callable[..., Sidecar]) -> None:
    side = sidecars("pipeline", extra=["--admin-token", "s3cret-admin"])
    assert side.admin("/readyz")[0] == 200 and side.admin("/healthz")[0] == 200
    for path in ("/metrics", "/config", "/endpoints"):
        status, body = side.admin(path)
        assert status == 401 and "bearer token" in body, path
    request = urllib.request.Request(
        f"http://{side.info['admin']}/config", headers={"Authorization": "Bearer s3cret-admin"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        config = json.loads(answer.read())
    shown = json.dumps(config)
    assert "s3cret-admin" not in shown and "admin_token" in shown
    assert side.stop() == 0


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--tls-cert", "/nonexistent.pem"], "--tls-key"),
        (["--authorization", '{"toy": ["a"]}'], "--authorization"),
        (["--local-mesh-addr", "127.0.0.1:0"], "--local-mesh-addr"),
        (["--tls-cert", "/no.pem", "--tls-key", "/no.key", "--tls-ca", "/no.ca"], "--tls-cert"),
        (
            [
                "--authorization",
                '{"toy": ["bad caller"]}',
                "--tls-cert",
                "a",
                "--tls-key",
                "b",
                "--tls-ca",
                "c",
            ],
            "--authorization",
        ),
    ],
)
def test_bad_tls_settings_exit_2_naming_them(tmp_path: Path, flags: list[str], named: str) -> None:
    argv = [sys.executable, "-m", "sidecar", "run", "--service", "x", "--discovery",
            f"static://{tmp_path / 'none.yaml'}", "--mesh-addr", "127.0.0.1:0",
            "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0",
            "--admin-addr", "127.0.0.1:0", *flags]  # fmt: skip
    (tmp_path / "none.yaml").write_text("services: {}\n")
    done = subprocess.run(argv, env=child_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert named in done.stderr

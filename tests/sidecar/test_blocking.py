"""BlockingMeshClient from plain threads, against a serve() process."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest

from sidecar import BlockingMeshClient, HandlerError, InvalidInput

from ..conftest import ServeProcess

SERVER = """
import numpy as np
from sidecar import serve
def handler(inputs):
    if "fail" in inputs:
        raise RuntimeError("asked to fail")
    return {{"y": inputs["x"] + 1}}
serve(handler, service="inc", ready_file={ready!r}, uds_path={uds!r})
"""


def test_blocking_client_calls_from_many_threads(
    serve_process: Callable[[str], ServeProcess],
) -> None:
    server = serve_process(SERVER)
    errors: list[BaseException] = []
    with BlockingMeshClient(server.mesh) as client:

        def worker(k: int) -> None:
            try:
                for i in range(30):
                    x = np.full(100 + i, k * 1000 + i, dtype=np.int32)
                    np.testing.assert_array_equal(client.infer("inc", {"x": x})["y"], x + 1)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with pytest.raises(HandlerError, match="asked to fail"):
            client.infer("inc", {"fail": np.zeros(1)})
        assert client.ping() > 0
    assert not errors
    with pytest.raises(InvalidInput, match="closed"):
        client.infer("inc", {"x": np.zeros(1)})
    assert server.stop() == 0


def test_blocking_client_over_a_unix_socket(serve_process: Callable[[str], ServeProcess]) -> None:
    server = serve_process(SERVER)
    with BlockingMeshClient(server.uds) as client:
        assert client.infer("inc", {"x": np.arange(3)})["y"].tolist() == [1, 2, 3]
    assert server.stop() == 0

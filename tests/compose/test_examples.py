"""The example model and pipeline the stack runs: the model's answer, the pipeline's probe."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from .stack import script

pytestmark = pytest.mark.timeout(30)

MODEL = "/opt/arrowmesh/examples/model.py"
PIPELINE = "/opt/arrowmesh/examples/pipeline.py"
Handler = Callable[[dict[str, npt.NDArray[Any]]], dict[str, npt.NDArray[Any]]]


def test_model_answers_unit_rows_their_norms_and_the_replica_name() -> None:
    handler: Handler = script(MODEL).make_handler("replica-7")
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    x[0] = 0
    out = handler({"x": x})
    np.testing.assert_allclose(out["norm"], np.linalg.norm(x, axis=-1), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out["embedding"][1:], axis=-1), 1.0, rtol=1e-6)
    assert not out["embedding"][0].any()  # a zero row stays zero, no division by zero
    assert out["replica"].tolist() == [b"replica-7"]


def test_pipeline_probe_passes_only_while_the_heartbeat_is_fresh(tmp_path: Path) -> None:
    check: Callable[[str, float, float], int] = script(PIPELINE).check
    heartbeat = tmp_path / "heartbeat"
    assert check(str(heartbeat), 15.0, 1000.0) == 1  # no answer yet
    heartbeat.touch()
    os.utime(heartbeat, (1000.0, 1000.0))
    assert check(str(heartbeat), 15.0, 1010.0) == 0
    assert check(str(heartbeat), 15.0, 1016.0) == 1

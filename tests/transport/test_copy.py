"""copy_parallel: a large copy split across threads is the same copy."""

from __future__ import annotations

import numpy as np
import pytest

from transport import copy_parallel
from transport._copy import PARALLEL_MIN


@pytest.mark.parametrize(
    "size", [0, 1, 4095, PARALLEL_MIN - 1, PARALLEL_MIN, 3 * PARALLEL_MIN + 12345]
)
def test_every_byte_arrives_once_in_place(size: int) -> None:
    src = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    dest = np.zeros(size + 64, dtype=np.uint8)
    copy_parallel(dest[32 : 32 + size], src)
    np.testing.assert_array_equal(dest[32 : 32 + size], src)
    assert not dest[:32].any() and not dest[32 + size :].any()  # nothing outside


def test_a_size_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="same size"):
        copy_parallel(np.zeros(10, np.uint8), np.zeros(11, np.uint8))

"""What the sidecars say they relayed: `arrowmesh_relayed_bytes_total` by mode, from /metrics.

Read before and after the large-tensor groups: bytes passed on by reference should grow
by what went through, and bytes copied should not grow at all.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Final

from prometheus_client.parser import text_string_to_metric_families

from bench._errors import BenchError

METRIC: Final = "arrowmesh_relayed_bytes_total"


def read(admin: str) -> dict[str, float]:
    """Bytes relayed so far by mode ("reference", "copied", "network") by the sidecar whose
    admin listener is `admin`. Raises BenchError if it cannot be read."""
    try:
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5.0) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise BenchError(f"cannot read the sidecar's metrics at {admin}: {exc}") from exc
    modes: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == METRIC:
                mode = sample.labels.get("mode", "")
                modes[mode] = modes.get(mode, 0.0) + sample.value
    return modes


def read_all(admins: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """`read` for each sidecar, by name."""
    return {name: read(admin) for name, admin in admins.items()}

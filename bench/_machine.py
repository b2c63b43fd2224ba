"""What a result was measured on: CPUs, OS, Python and library versions, when."""

from __future__ import annotations

import datetime
import os
import platform
from importlib import metadata
from typing import Final

_PACKAGES: Final = ("numpy", "pyarrow", "grpcio", "aiohttp", "uvloop", "arrowmesh")


def machine_info() -> dict[str, object]:
    """A JSON-ready description of this machine and run."""
    return {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "versions": {name: _version(name) for name in _PACKAGES},
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None

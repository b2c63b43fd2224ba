"""What a result was measured on: CPUs, OS, Python and library versions, when."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Final

_PACKAGES: Final = ("numpy", "pyarrow", "grpcio", "aiohttp", "uvloop", "ray", "arrowmesh")
_REPO: Final = Path(__file__).resolve().parent.parent


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
        "source": _source_revision(),
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _source_revision() -> str | None:
    """The git commit of this checkout, "+dirty" if it has changes; None outside git."""
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(_REPO), *args], capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout.strip()

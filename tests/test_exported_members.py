"""Each package's __all__ lists exactly its public names, sorted."""

from __future__ import annotations

import importlib
import types

import pytest


@pytest.mark.parametrize("name", ["transport", "discovery", "sidecar", "sidecar.oip_upstream"])
def test_all_matches_the_public_names(name: str) -> None:
    package = importlib.import_module(name)
    public = {
        attr
        for attr, value in vars(package).items()
        if not attr.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(package.__all__) == public
    assert list(package.__all__) == sorted(package.__all__, key=lambda s: (not s.isupper(), s))
    for attr in package.__all__:
        value = getattr(package, attr)
        if isinstance(value, type | types.FunctionType) and value.__module__ != "typing":
            assert value.__module__.startswith(f"{name}._"), f"{attr} comes from {value.__module__}"

"""Static mesh files: parse_static raises only RecordError, and accepts only valid endpoints.

Inputs: documents shaped like the DESIGN.md format with any value swapped for a wrong type,
an edge value or a YAML scalar PyYAML resolves specially, written as YAML or JSON and then
possibly cut or overwritten character by character; and plain random text.
"""

from __future__ import annotations

import asyncio
import json
import string
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import cast

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from discovery import (
    Endpoint,
    Outage,
    RecordError,
    Snapshot,
    StaticRegistry,
    WatchEvent,
    parse_static,
)

from . import _budget
from ._budget import event
from ._strategies import rarely
from ._yaml import alias_bomb, raised_by_yaml_constructor, tricky_scalars

pytestmark = pytest.mark.timeout(_budget.timeout())

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=5,
)
entry = st.fixed_dictionaries(
    {
        "id": rarely(st.sampled_from(["e-1", "e-2", "e-1", 7]), values, 6),
        "address": rarely(st.sampled_from(["10.0.0.5", "host-a", "::1"]), values, 6),
        "port": rarely(st.integers(1, 65535), st.integers() | values, 6),
    },
    optional={
        "protocol": rarely(st.sampled_from(["mesh", "http", "oip-grpc"]), values, 4),
        "meta": rarely(
            st.dictionaries(st.sampled_from(["zone", "weight", "shm_domain", "gpu", "capacity"]),
                            st.text(string.digits, max_size=3) | st.integers(0, 9), max_size=3),
            values,
            5,
        ),
        "extra": values,
    },
)  # fmt: skip
documents = rarely(st.fixed_dictionaries(
    {
        "services": rarely(
            st.dictionaries(
                st.sampled_from(["embedder", "ranker", "x y"]),
                st.lists(entry, min_size=1, max_size=3),
                min_size=1,
                max_size=2,
            ),
            values,
            10,
        )
    }
), values, 8)  # fmt: skip


@st.composite
def files(draw: st.DrawFn) -> bytes:
    """A static file as text: a dumped document, possibly edited by hand, or anything."""
    document = draw(documents)
    as_json = draw(st.booleans())
    try:
        text = json.dumps(document) if as_json else yaml.safe_dump(document)
    except (TypeError, ValueError):
        text = yaml.safe_dump(document)
    for _ in range(draw(rarely(st.just(0), st.integers(1, 2), 3))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["scalar", "char", "cut"]))
        if op == "scalar":
            text = text[:at] + draw(tricky_scalars) + text[at:]
        elif op == "char":
            text = text[:at] + draw(st.sampled_from(":-[]{},&*!|>'\"#\n\t ")) + text[at + 1 :]
        else:
            text = text[:at]
    raw = text.encode()
    return draw(
        rarely(st.just(raw), st.binary(max_size=80) | st.text(max_size=80).map(str.encode), 8)
    )


def _check(services: dict[str, tuple[Endpoint, ...]]) -> None:
    for name, endpoints in services.items():
        assert isinstance(name, str)
        ids = [e.id for e in endpoints]
        assert len(set(ids)) == len(ids)
        for endpoint in endpoints:
            assert endpoint.service == name
            again = Endpoint.from_record(
                name, endpoint.id, endpoint.address, endpoint.port, endpoint.to_meta()
            )
            assert again == endpoint


@_budget.fuzz(examples=150)
@given(files())
def test_static_files_give_valid_endpoints_or_record_error(text: bytes) -> None:
    message = ""
    try:
        services = parse_static(text, "mesh.yaml")
    except RecordError as exc:
        message = str(exc)
    except (ValueError, AttributeError) as exc:
        if not raised_by_yaml_constructor(exc):
            raise
        event("finding: PyYAML constructor error escaped")  # pinned below
        return
    else:
        event(f"accepted {sum(map(len, services.values()))} endpoints")
        _check(services)
        return
    event(f"refused: {message[:30]}")
    assert len(message) <= 4096 + 4 * len(text)  # says what is wrong, not everything


# Regressions for what the fuzzer found.

YAML_SCALAR_ESCAPES = [
    "services: {s: [{id: a, address: x, port: 1, meta: {zone: 2001-02-30}}]}\n",
    "services: {s: [{id: a, address: x, port: !!int '0x'}]}\n",
    "when: !!timestamp 'soon'\nservices: {}\n",
]


# Found by fuzzing; fixed.
@pytest.mark.parametrize("text", YAML_SCALAR_ESCAPES)
def test_a_scalar_pyyaml_cannot_construct_is_a_record_error(text: str) -> None:
    with pytest.raises(RecordError):
        parse_static(text.encode(), "mesh.yaml")


# Found by fuzzing; fixed.
async def test_a_bad_date_in_an_edited_static_file_is_an_outage(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    good = "services: {s: [{id: a, address: 10.0.0.5, port: 7700}]}\n"
    await _write(path, good)
    registry = StaticRegistry(str(path), poll_interval=0.05)
    # An async generator, though annotated as an iterator: closed here, not left to the GC.
    watch = cast(AsyncGenerator[WatchEvent, None], registry.watch("s"))
    try:
        async with asyncio.timeout(10):
            first = await anext(watch)
            assert isinstance(first, Snapshot) and len(first.endpoints) == 1
            await _write(path, YAML_SCALAR_ESCAPES[0])
            second = await anext(watch)
        assert isinstance(second, Outage)
    finally:
        await watch.aclose()
        await registry.aclose()


@pytest.mark.parametrize("levels", [4, 6, 12])
def test_nested_yaml_aliases_do_not_expand_into_the_error(levels: int) -> None:
    # Was a finding: an endpoint id was formatted with str(), so a 350-byte file of nested
    # aliases (a "billion laughs") made a multi-megabyte message, and 10 levels a hang.
    text = (
        alias_bomb(levels, "anchors")
        + f"services: {{s: [{{id: *a{levels - 1}, address: x, port: 1}}]}}\n"
    )
    assert len(text) < 600
    with pytest.raises(RecordError) as info:
        parse_static(text.encode(), "mesh.yaml")
    assert len(str(info.value)) < 2000


async def _write(path: Path, text: str) -> None:
    await asyncio.to_thread(path.write_text, text)

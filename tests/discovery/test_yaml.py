"""The bounded YAML loader used for config and static discovery files."""

from __future__ import annotations

import pytest
import yaml

from discovery._yaml import YamlTooLarge, load_bounded
from tests.fuzz._yaml import alias_bomb

COMPOSE_STYLE = """
base: &base {zone: a, capacity: 4}
services:
  embedder:
    - {<<: *base, id: e1, port: 1}
    - {<<: *base, id: e2, port: 2, zone: b}
shared: [*base, *base]
"""


@pytest.mark.parametrize("text", [COMPOSE_STYLE, "", "x: 1", "[1, 2, [3]]", alias_bomb(5, "k")])
def test_it_loads_what_safe_load_loads(text: str) -> None:
    assert load_bounded(text) == yaml.safe_load(text)


def test_the_limit_counts_expanded_values_not_bytes() -> None:
    text = alias_bomb(5, "k")  # 8**5 + 8**4 + ... strings (~37,000) and their lists
    assert load_bounded(text, max_values=50_000) == yaml.safe_load(text)
    with pytest.raises(YamlTooLarge, match="more than 30000 values"):
        load_bounded(text, max_values=30_000)


def test_a_billion_laughs_is_refused_at_once() -> None:
    with pytest.raises(YamlTooLarge, match="aliases"):
        load_bounded(alias_bomb(30, "k"))  # 8**30 values expanded


def test_a_value_that_contains_itself_is_refused() -> None:
    with pytest.raises(YamlTooLarge, match="cycle"):
        load_bounded("a: &x {b: *x}")

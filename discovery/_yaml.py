"""YAML for files a person (or a hostile ConfigMap) writes: safe tags, and a bounded size.

`yaml.safe_load` keeps an alias as a shared reference, so a few hundred bytes of nested
aliases (a "billion laughs") load quickly into a structure that is gigabytes once walked:
by a validator, `repr` in an error message, or a copy. `load_bounded` counts the values
the document holds once every alias is expanded, on the composed node graph (each node
once), and refuses the document above `max_values`, before anything is built from it.
"""

from __future__ import annotations

from typing import Final

import yaml

MAX_VALUES: Final = 100_000
_Loader: Final = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlTooLarge(ValueError):
    """The document expands past the limit, or an alias refers to its own ancestor."""


def load_bounded(text: str | bytes, max_values: int = MAX_VALUES) -> object:
    """`yaml.safe_load(text)`, refusing documents of more than `max_values` expanded values.

    Raises yaml.YAMLError (and PyYAML's ValueError/AttributeError for some scalars) as
    safe_load does, and YamlTooLarge.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node, max_values)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_size(root: yaml.Node, limit: int) -> None:
    """Post-order over the node graph, each node once: its size with aliases expanded."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            size = 1 + sum(sizes[id(child)] for child in _children(node))
            if size > limit:
                raise YamlTooLarge(
                    f"the document holds more than {limit} values once its aliases are "
                    "expanded (nested aliases?)"
                )
            sizes[key] = size
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise YamlTooLarge("an alias refers to a value that contains it (a cycle)")
        open_nodes.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                raise YamlTooLarge("an alias refers to a value that contains it (a cycle)")
            if id(child) not in sizes:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []

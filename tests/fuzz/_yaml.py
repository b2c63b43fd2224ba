"""YAML inputs shared by the static-file and settings fuzzers, and the known PyYAML escape.

PyYAML's SafeLoader raises bare ValueError / AttributeError (not yaml.YAMLError) for some
scalars it resolves implicitly or by tag: `2001-02-30` (a date out of range), `!!int '0x'`,
`!!timestamp 'x'`. Callers that catch only yaml.YAMLError let those out; that is a finding
pinned by xfail tests in test_static_files.py and test_config_loader.py. The fuzz tests
tolerate exactly that escape (`raised_by_yaml_constructor`) so they keep looking for others.
"""

from __future__ import annotations

import traceback

from hypothesis import strategies as st

from discovery import RecordError
from sidecar import ConfigError

DOCUMENTED = (RecordError, ConfigError)  # the errors the callers promise are never the escape

# Scalars PyYAML resolves to something other than a string, and the ones it fails on.
tricky_scalars = st.sampled_from(
    ["2001-02-03", "2001-02-30", "1_000", "0x1F", "0o17", "190:20:30", ".inf", ".nan", "~",
     "null", "yes", "no", "on", "off", "true", "1e3", "-0", "'quoted'", '"dq"', "!!str 5",
     "!!int '0x'", "!!timestamp 'x'", "!!binary 'eA=='", "!!float 'x'", "&a 1", "*a", "[]", "{}",
     "|\n  block", ">-\n  folded", "? x", "- item", "'unterminated", "\t", "#c", "%YAML 1.1"]
)  # fmt: skip


def raised_by_yaml_constructor(exc: BaseException) -> bool:
    """True if `exc` is PyYAML's constructor failing on a scalar (the known escape)."""
    if not isinstance(exc, ValueError | AttributeError) or isinstance(exc, DOCUMENTED):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    return any(f.filename.replace("\\", "/").endswith("yaml/constructor.py") for f in frames)


def alias_bomb(levels: int, key: str, width: int = 8) -> str:
    """A YAML document of a few hundred bytes whose `key` expands to width**levels strings."""
    inner = "[" + ",".join(["x"] * width) + "]"
    text = f"{key}: [&a0 {inner}"
    for i in range(1, levels):
        text += f", &a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]"
    return text + "]\n"

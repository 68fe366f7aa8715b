"""YAML from users (preset files, `--set` values), loaded with bounds.

yaml.safe_load never runs code, but its aliases are shared references: nine anchors of nine
aliases each describe 9**9 values in a few hundred bytes (the "billion laughs"), which anything
that walks or prints the result (a validation error message) then expands. An anchor may also
contain itself. Both are refused here, as is nesting deeper than any preset needs.

A key given twice in one mapping is refused too: PyYAML keeps the last one silently, so a preset
with `bnb_4bit_quant_type: fp4` above a forgotten `bnb_4bit_quant_type: nf4` would load as nf4 while
its author reads fp4. (YAML 1.2 says keys are unique; `<<` merge keys may still be overridden.)
"""

from __future__ import annotations

from typing import Any

import yaml

from qcli.errors import UsageError

MERGE_TAG = "tag:yaml.org,2002:merge"


# libyaml's parser when PyYAML was built with it (the wheels are): the same safe constructor, about ten
# times quicker to parse than the pure-Python one, which was most of reading gpus.yaml (docs/bench.md).
class SafeLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """PyYAML's safe loader, refusing a key given twice in one mapping (with its line and column)."""

    def construct_document(self, node: yaml.Node) -> Any:
        # Checked on the composed tree, before anything is built: PyYAML merges `<<` keys into an anchored
        # mapping's own node while building, and a mapping checked after that would hold the merged keys.
        seen_nodes: set[int] = set()
        stack = [node]
        while stack:
            current = stack.pop()
            if id(current) in seen_nodes:
                continue
            seen_nodes.add(id(current))
            if isinstance(current, yaml.MappingNode):
                self._check_unique(current)
                stack.extend(n for pair in current.value for n in pair)
            elif isinstance(current, yaml.SequenceNode):
                stack.extend(current.value)
        return super().construct_document(node)

    def _check_unique(self, node: yaml.MappingNode) -> None:
        first_at: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue  # a merge may be overridden; a mapping or list as a key is PyYAML's to refuse
            key = self.construct_object(key_node)
            first = first_at.setdefault(key, key_node)
            if first is not key_node:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found the key {key!r} twice (first at line {first.start_mark.line + 1}); "
                    "YAML keeps only the last, so give it once",
                    key_node.start_mark,
                )


SAFE_LOADER: type = SafeLoader

MAX_VALUES = 10_000  # values after alias expansion; a preset has about twenty
MAX_DEPTH = 32  # a preset nests three levels


class _Refused(Exception):
    def __init__(self, problem: str, path: tuple[object, ...]) -> None:
        super().__init__(problem)
        self.path = path


def _count(obj: Any, path: tuple[object, ...], sizes: dict[int, int], open_: set[int]) -> int:
    """Return how many values `obj` holds once aliases are expanded (shared nodes are counted once
    per reference but walked once, so the walk is linear in the text)."""
    if not isinstance(obj, (list, dict)):
        return 1
    if len(path) > MAX_DEPTH:
        raise _Refused(f"nested deeper than {MAX_DEPTH} levels", path)
    key = id(obj)
    if key in open_:
        raise _Refused("an alias refers to itself", path)
    if key in sizes:
        return sizes[key]
    open_.add(key)
    items = obj.items() if isinstance(obj, dict) else enumerate(obj)
    total = 1 + sum(1 + _count(v, (*path, k), sizes, open_) for k, v in items)
    open_.discard(key)
    if total > MAX_VALUES:
        raise _Refused(f"aliases expand to more than {MAX_VALUES:,} values", path)
    sizes[key] = total
    return total


def _where(path: tuple[object, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out[:80]


def load_yaml(text: str, where: str) -> Any:
    """Return the YAML value of `text`, or raise a UsageError starting with `where` if it is unbounded.

    yaml.YAMLError passes through for the caller to report with its line and column.
    """
    try:
        data = yaml.load(text, Loader=SAFE_LOADER)  # a safe loader: a !!python tag never executes
    except RecursionError:
        raise UsageError(f"{where}: YAML nested too deeply") from None
    try:
        _count(data, (), {}, set())
    except _Refused as exc:
        at = _where(exc.path)
        raise UsageError(f"{where}: {at + ': ' if at else ''}{exc}") from None
    return data

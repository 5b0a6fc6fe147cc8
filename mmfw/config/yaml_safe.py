"""A strict YAML reader for configs: UTF-8 only, duplicate keys are errors, alias expansion is bounded.

PyYAML's ``safe_load`` keeps the last of two equal keys silently, expands aliases without limit (a "billion laughs"
file exhausts memory) and reports undecodable bytes as a ``UnicodeDecodeError`` without a line. :func:`read_yaml_file`
and :func:`parse_yaml` raise :class:`YAMLProblem` instead, with a 1-based line (and column) wherever one is known;
the config loader turns it into a located :class:`~mmfw.config.loader.ConfigError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_EXPANDED_NODES = 200_000
"""The most YAML nodes a document may expand to through aliases (a real config has a few hundred)."""


class YAMLProblem(Exception):
    """A YAML document mmfw refuses; ``line`` and ``column`` are 1-based when known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message, self.line, self.column = message, line, column

    def located(self) -> str:
        where = f"line {self.line}" if self.line else ""
        if self.line and self.column:
            where += f", column {self.column}"
        return f"{where}: {self.message}" if where else self.message


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader whose mappings refuse a key written twice (naming both lines)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader reports it
                    break
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise YAMLProblem(f"duplicate key {key!r} (first on line {first}, again on line {line}); "
                                      "keep one of them", line, key_node.start_mark.column + 1)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many nodes ``node`` becomes once every alias is expanded (shared nodes counted once per use)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1  # a recursive alias: counted once, PyYAML itself builds it as a cycle
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(n, memo) for n in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[key] = size
    return size


def parse_yaml(text: str, max_nodes: int = MAX_EXPANDED_NODES) -> Any:
    """The Python value of one YAML document in ``text`` (``None`` for an empty one)."""
    loader = _StrictLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            raise YAMLProblem(f"invalid YAML: {e.problem or e}", mark.line + 1 if mark else None,
                              mark.column + 1 if mark else None) from None
        except yaml.YAMLError as e:
            raise YAMLProblem(f"invalid YAML: {e}") from None
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > max_nodes:
            raise YAMLProblem(f"aliases expand to {size:,} nodes (more than {max_nodes:,}); refusing an alias "
                              "expansion bomb: write the values out or use extends")
        try:
            return loader.construct_document(node)
        except YAMLProblem:
            raise
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            raise YAMLProblem(f"invalid YAML: {e.problem or e}", mark.line + 1 if mark else None,
                              mark.column + 1 if mark else None) from None
        except (yaml.YAMLError, TypeError) as e:  # TypeError: an unhashable key such as a list
            raise YAMLProblem(f"invalid YAML: {e}") from None
    finally:
        loader.dispose()


def decode_utf8(raw: bytes) -> str:
    """``raw`` as UTF-8 text, or a :class:`YAMLProblem` naming the line and column of the first bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        before = raw[:e.start]
        line = before.count(b"\n") + 1
        column = e.start - (before.rfind(b"\n") + 1) + 1
        raise YAMLProblem(f"not valid UTF-8 (byte 0x{raw[e.start]:02x}); save the file as UTF-8", line,
                          column) from None


def read_yaml_file(path: Path) -> Any:
    """Read and parse a YAML file strictly; a missing file raises ``FileNotFoundError``, a directory
    ``IsADirectoryError``, anything else mmfw refuses :class:`YAMLProblem`."""
    if path.is_dir():
        raise IsADirectoryError(str(path))
    return parse_yaml(decode_utf8(path.read_bytes()))

"""A YAML config file read safely: bounded in size and in what its aliases expand to, with one-line errors.

yaml's ``SafeLoader`` builds no objects but plain ones, yet a few hundred bytes of nested aliases
(``a: &a [x, x, x]``, ``b: &b [*a, *a, *a]``, …) stand for billions of values: anything that walks
the result (``str()``, a copy) runs out of memory. The loader here counts the values each node
stands for, aliases expanded, and refuses a document beyond :data:`MAX_VALUES`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from .errors import ConfigError
from .text_files import read_text

MAX_BYTES = 1 << 20
#: values (scalars, lists and mappings) a config may stand for once its aliases are expanded
MAX_VALUES = 100_000


class _Unbounded(yaml.YAMLError):
    """A document whose aliases expand beyond :data:`MAX_VALUES` values, or refer to themselves."""


def _expanded_size(node: Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many values ``node`` stands for with every alias expanded (``sizes``: the nodes already counted)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise _Unbounded("an alias refers to a list or mapping that contains it, an endless value")
    open_nodes.add(key)
    if isinstance(node, SequenceNode):
        children = node.value
    elif isinstance(node, MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    size = 1 + sum(_expanded_size(child, sizes, open_nodes) for child in children)
    open_nodes.discard(key)
    if size > MAX_VALUES:
        raise _Unbounded(f"its aliases expand to more than {MAX_VALUES} values, far more than a config needs")
    sizes[key] = size
    return size


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a document standing for more than :data:`MAX_VALUES` values."""

    def compose_document(self) -> Node:
        node = super().compose_document()
        if node is not None:
            _expanded_size(node, {}, set())
        return node


def _syntax_error(path: Path, text: str, error: yaml.YAMLError) -> ConfigError:
    """``FILE, line N: not valid YAML (problem; context)`` from yaml's multi-line message."""
    if isinstance(error, yaml.reader.ReaderError):  # a character YAML does not allow, e.g. a NUL byte
        line = text.count("\n", 0, error.position) + 1
        return ConfigError(
            f"{path}, line {line}: not valid YAML (character #x{error.character:04x}: {error.reason}). Remove it."
        )
    mark = getattr(error, "problem_mark", None)
    where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
    reasons = [part for part in (getattr(error, "problem", None), getattr(error, "context", None)) if part]
    return ConfigError(f"{where}: not valid YAML ({'; '.join(reasons) or error}). Fix that line.")


def read_yaml_mapping(path: Path, *, empty_hint: str) -> dict[str, Any]:
    """The mapping a YAML file holds; a ConfigError naming the file (and line) for anything else.

    Refused: a missing file, more than :data:`MAX_BYTES`, bytes that are not UTF-8, invalid YAML, aliases
    expanding too far, a file with nothing but comments (``empty_hint`` says what to write), a list or a scalar.
    """
    if not path.is_file():
        raise ConfigError(f"Config file {str(path)!r} does not exist.")
    text = read_text(path, max_bytes=MAX_BYTES)
    try:
        values = yaml.load(text, Loader=BoundedLoader)  # noqa: S506 (a SafeLoader)
    except _Unbounded as error:
        raise ConfigError(f"{path}: {error}. Write the values out.") from None
    except RecursionError:
        raise ConfigError(f"{path}: lists or mappings nested too deeply to be a config.") from None
    except yaml.YAMLError as error:
        raise _syntax_error(path, text, error) from None
    if values is None:
        raise ConfigError(f"{path} is empty (nothing but blank lines or comments). {empty_hint}")
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must contain a YAML mapping of keys to values, not a {type(values).__name__}.")
    return values

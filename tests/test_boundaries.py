"""The architecture's boundaries, read from the source: only ``dpo_plugin/trl/`` imports TRL, only its
``forward.py`` touches TRL's (or transformers') private names (each listed in its docstring), nothing
patches a library, strategies and checks never reach into the trainer, and functions stay short."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dpo_plugin"
FORWARD = PACKAGE / "trl" / "forward.py"
MAX_FUNCTION_LINES = 50


def _modules() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _imported_modules(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_only_the_trl_package_imports_trl():
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(m for m in _imported_modules(tree) if m.split(".")[0] == "trl")
        for path, tree in MODULES.items()
        if PACKAGE / "trl" not in path.parents
    }
    assert {path: found for path, found in offenders.items() if found} == {}


def _own_names() -> set[str]:
    """Every name the package defines: functions, classes, attributes it assigns, class-level fields, parameters."""
    own = set()
    for tree in MODULES.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)):
                own.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                own.add(node.id)
            elif isinstance(node, ast.arg):
                own.add(node.arg)
    return own


def _foreign_private_names(tree: ast.Module, own: set[str]) -> set[str]:
    """Private (single leading underscore) names a module takes from other libraries: imported or read as attributes."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            found |= {a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")}
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            name = node.attr
            if name.startswith("_") and not name.startswith("__") and name not in own:
                found.add(name)
    return found


def _listed_private_names() -> set[str]:
    """The private names forward.py's docstring lists (written ``Owner._name``)."""
    doc = ast.get_docstring(MODULES[FORWARD]) or ""
    return set(re.findall(r"\.(_[A-Za-z]\w*)", doc))


def test_foreign_private_names_live_in_forward_only_and_are_listed():
    own = _own_names()
    listed = _listed_private_names()
    elsewhere = {
        str(path.relative_to(PACKAGE)): sorted(names)
        for path, tree in MODULES.items()
        if path != FORWARD and (names := _foreign_private_names(tree, own))
    }
    assert elsewhere == {}, "TRL/transformers private names outside trl/forward.py"
    used = _foreign_private_names(MODULES[FORWARD], own)
    assert used <= listed, f"private names used in forward.py but not listed in its docstring: {sorted(used - listed)}"
    assert listed, "forward.py's docstring lists the TRL-private names it relies on"


def test_the_private_name_scan_finds_what_it_should():
    """The scan itself: a foreign private attribute and a private import are found, our own names are not."""
    tree = ast.parse("from trl.data_utils import _tokenize\nx = trainer._metrics\nself._mine = 1\ny = self._mine\n")
    assert _foreign_private_names(tree, {"_mine"}) == {"_tokenize", "_metrics"}


def test_no_library_code_patches_other_modules():
    for path, tree in MODULES.items():
        assert not {"unittest.mock", "mock"} & _imported_modules(tree), path
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "__dict__" and isinstance(node.ctx, ast.Load):
                owner = node.value
                assert path == FORWARD or (isinstance(owner, ast.Name) and owner.id == "self"), (
                    f"{path.relative_to(PACKAGE)}:{node.lineno} reads another object's __dict__"
                )


@pytest.mark.parametrize("folder", ["reference", "evaluation"])
def test_strategies_and_checks_never_touch_the_trainer(folder):
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not re.search(r"\btrainer\.", line), f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"


def test_functions_are_short():
    long = []
    for path, tree in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({length} lines)")
    assert long == []

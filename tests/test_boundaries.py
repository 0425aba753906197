"""The architecture's boundaries, read from the source: only ``dpo_plugin/trl/`` imports TRL, only its
``forward.py`` touches TRL's (or transformers') private names (each listed in its docstring), nothing
patches a library, strategies and checks never reach into the trainer, and functions stay short."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dpo_plugin"
FORWARD = PACKAGE / "hosts" / "trl" / "forward.py"
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
        if PACKAGE / "hosts" / "trl" not in path.parents
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


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _foreign_private_names(tree: ast.Module, own: set[str]) -> set[str]:
    """Private (single leading underscore) names a module takes from other libraries: imported, read as attributes,
    named in a ``getattr``/``hasattr``/``setattr`` call, or looked up on another library's class."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            found |= {a.name for a in node.names if _private(a.name)}
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and _private(node.attr):
            foreign_owner = isinstance(node.value, ast.Attribute) and isinstance(node.value.value, ast.Name) and node.value.value.id in ("trl", "transformers", "peft", "accelerate")
            if node.attr not in own or foreign_owner:
                found.add(node.attr)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr", "setattr"):
            if len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                if _private(node.args[1].value) and node.args[1].value not in own:
                    found.add(node.args[1].value)
    return found


def _listed_private_names() -> dict[str, set[str]]:
    """The private names forward.py's docstring lists (``Owner._name``), each with the modules that may use it."""
    doc = ast.get_docstring(MODULES[FORWARD]) or ""
    allowed: dict[str, set[str]] = {}
    for item in re.split(r"\n- ", doc):
        names = re.findall(r"``\w+\.(_[A-Za-z]\w*)", item) or re.findall(r"``(_[A-Za-z]\w*)``", item)
        modules = {"hosts/trl/forward.py"} | set(re.findall(r"\(in ``([\w/]+\.py)``\)", item))
        for name in names:
            allowed.setdefault(name, set()).update(modules)
    return allowed


def test_foreign_private_names_are_listed_and_used_only_where_listed():
    own, allowed = _own_names(), _listed_private_names()
    misplaced = {}
    for path, tree in MODULES.items():
        where = str(path.relative_to(PACKAGE))
        names = {n for n in _foreign_private_names(tree, own) if where not in allowed.get(n, set())}
        if names:
            misplaced[where] = sorted(names)
    assert misplaced == {}, "TRL/transformers private names not listed in trl/forward.py's docstring for that module"
    assert {"_precompute_ref_logps", "_prepare_dataset", "_attn_implementation"} <= set(allowed)


def test_the_private_name_scan_finds_what_it_should():
    """The scan itself: a foreign private attribute, a private import and a getattr name are found, our own names
    are not, and a private attribute of TRL's class is found even when we define one of that name."""
    source = (
        "from trl.data_utils import _tokenize\nx = trainer._metrics\nself._mine = 1\ny = self._mine\n"
        "z = getattr(config, '_attn_implementation', None)\nw = trl.DPOConfig._mine\n"
    )
    assert _foreign_private_names(ast.parse(source), {"_mine"}) == {"_tokenize", "_metrics", "_attn_implementation", "_mine"}


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

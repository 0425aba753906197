"""The architecture's boundaries, read from the source.

- A host's library is imported only in its folder (``trl`` under ``hosts/trl/``, ``axolotl`` under
  ``hosts/axolotl/``); the session and everything host-free import no host.
- No attribute of a TRL object is read outside ``hosts/trl/``, public or private: the names TRL's
  ``DPOTrainer`` and ``DPOConfig`` add to transformers' ``Trainer`` and ``TrainingArguments``.
- A foreign private name (TRL's, transformers', peft's …) is used only where the docstring of
  ``hosts/trl/internals.py`` (TRL's) or of the module itself lists it.
- Built-in strategies and hosts are reached through the registries, not imported.
- Nothing patches a library, strategies and checks never reach into the trainer, functions stay short.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dpo_plugin"
INTERNALS = PACKAGE / "hosts" / "trl" / "internals.py"
MAX_FUNCTION_LINES = 50
HOST_LIBRARIES = {"trl": "hosts/trl", "axolotl": "hosts/axolotl"}
#: the public face of the TRL host (``from dpo_plugin.trl import DPOConfig, DPOTrainer``) re-exports it
PUBLIC_FACES = {"trl/__init__.py"}


def _modules() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _where(path: Path) -> str:
    return str(path.relative_to(PACKAGE))


def _imported_modules(tree: ast.Module, path: Path | None = None) -> set[str]:
    """Absolute names of the modules a module imports (relative imports resolved when ``path`` is given)."""
    names = set()
    package = ".".join(("dpo_plugin", *path.relative_to(PACKAGE).parent.parts)) if path else ""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                base = node.module
            elif node.level and path is not None:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                continue
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("library", sorted(HOST_LIBRARIES))
def test_a_host_library_is_imported_only_in_its_host_folder(library):
    folder = PACKAGE / HOST_LIBRARIES[library]
    offenders = {
        _where(path): sorted(m for m in _imported_modules(tree) if m.split(".")[0] == library)
        for path, tree in MODULES.items()
        if folder not in path.parents
    }
    assert {path: found for path, found in offenders.items() if found} == {}


def test_host_free_modules_import_no_host():
    """Outside ``hosts/`` only the host contract (``hosts/base.py``) is imported; the session imports no host."""
    offenders = {}
    for path, tree in MODULES.items():
        where = _where(path)
        if where.startswith("hosts/") or where in PUBLIC_FACES:
            continue
        hosts = {m for m in _imported_modules(tree, path) if m.startswith("dpo_plugin.hosts.")}
        hosts -= {"dpo_plugin.hosts.base"} | {m for m in hosts if m.startswith("dpo_plugin.hosts.base.")}
        if hosts:
            offenders[where] = sorted(hosts)
    assert offenders == {}


def test_built_in_strategies_are_reached_through_the_registry():
    """Outside ``reference/``, only the strategy contract (``reference/base.py``) is imported."""
    offenders = {}
    for path, tree in MODULES.items():
        where = _where(path)
        if where.startswith("reference/"):
            continue
        found = {m for m in _imported_modules(tree, path) if m.startswith("dpo_plugin.reference.")}
        found = {m for m in found if not m.startswith("dpo_plugin.reference.base")}
        if found:
            offenders[where] = sorted(found)
    assert offenders == {}


def _trl_names() -> set[str]:
    """The attributes TRL's ``DPOTrainer``/``DPOConfig`` add to transformers' ``Trainer``/``TrainingArguments``."""
    import transformers
    import trl
    from trl.trainer import dpo_trainer

    trainer_attributes = set(re.findall(r"self\.([A-Za-z_]\w*)\s*=", inspect.getsource(transformers.Trainer)))
    names = set(dir(trl.DPOTrainer)) | set(re.findall(r"self\.([A-Za-z_]\w*)\s*=", inspect.getsource(dpo_trainer)))
    names -= set(dir(transformers.Trainer)) | trainer_attributes
    fields = {f.name for f in dataclasses.fields(trl.DPOConfig)}
    names |= fields - {f.name for f in dataclasses.fields(transformers.TrainingArguments)}
    return names


def _defined_names(modules: dict[Path, ast.Module]) -> set[str]:
    """Attribute names the package's own classes define: class-level fields and methods, and ``x.name = …`` targets."""
    own = set()
    for tree in modules.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        own.add(item.target.id)
                    elif isinstance(item, ast.Assign):
                        own |= {t.id for t in item.targets if isinstance(t, ast.Name)}
                    elif isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        own.add(item.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                own.add(node.attr)
    return own


def test_no_attribute_of_a_trl_object_is_read_outside_the_trl_host():
    """Public or private: any name TRL's trainer or config adds (and the package itself does not define) is TRL's."""
    outside = {path: tree for path, tree in MODULES.items() if not _where(path).startswith("hosts/trl/")}
    trl_only = _trl_names() - _defined_names(outside)
    assert {"loss_types", "precompute_ref_logps", "aux_loss_enabled", "router_aux_loss_coef"} <= trl_only
    used = {}
    for path, tree in outside.items():
        names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} & trl_only
        if names:
            used[_where(path)] = sorted(names)
    assert used == {}


#: Names that hold a trainer or its arguments here: a TRL name read on them is TRL's, whatever else defines it.
TRAINER_RECEIVERS = {"args", "training_args", "trainer", "trainer_args"}


def _receiver(node: ast.expr) -> str | None:
    """``args``/``trainer`` for ``args.x``, ``self.trainer.x``, ``trainer.args.x`` …; None for other receivers."""
    if isinstance(node, ast.Name):
        return node.id if node.id in TRAINER_RECEIVERS else None
    if isinstance(node, ast.Attribute):
        return node.attr if node.attr in TRAINER_RECEIVERS else None
    return None


def test_no_trl_name_is_read_on_a_trainer_or_its_arguments_outside_the_trl_host():
    """Also the TRL names the package happens to define itself (``beta``, ``ref_model``, ``max_length`` …)."""
    trl_names = _trl_names()
    assert {"beta", "ref_model", "max_length", "truncation_mode", "ld_alpha"} <= trl_names
    used = {}
    for path, tree in MODULES.items():
        if _where(path).startswith("hosts/trl/") or _where(path) == "cli.py":  # cli's args are argparse's
            continue
        names = {
            n.attr
            for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and n.attr in trl_names and _receiver(n.value)
        }
        if names:
            used[_where(path)] = sorted(names)
    assert used == {}


def test_the_trl_attribute_scan_finds_what_it_should():
    source = "a = trainer.loss_types\nb = trainer.model\nself.aux_loss_enabled\n"
    found = {n.attr for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Attribute)} & _trl_names()
    assert found == {"loss_types", "aux_loss_enabled"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


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


FOREIGN = ("trl", "transformers", "peft", "accelerate")


def _foreign_private_names(tree: ast.Module, own: set[str]) -> set[str]:
    """Private (single leading underscore) names a module takes from other libraries: imported, read as attributes,
    named in a ``getattr``/``hasattr``/``setattr`` call, or looked up on another library's class."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            found |= {a.name for a in node.names if _private(a.name)}
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) and _private(node.attr):
            owner = node.value
            foreign_owner = (
                isinstance(owner, ast.Attribute) and isinstance(owner.value, ast.Name) and owner.value.id in FOREIGN
            )
            if node.attr not in own or foreign_owner:
                found.add(node.attr)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) > 1:
                name = node.args[1]
                if isinstance(name, ast.Constant) and isinstance(name.value, str):
                    if _private(name.value) and name.value not in own:
                        found.add(name.value)
    return found


def _listed(doc: str, module: str) -> dict[str, set[str]]:
    """The private names a docstring lists (``Owner._name``), each with the modules that may use it."""
    allowed: dict[str, set[str]] = {}
    for item in re.split(r"\n- |\n\n", doc):
        names = re.findall(r"``[\w.]+\.(_[A-Za-z]\w*)", item) or re.findall(r"``(_[A-Za-z]\w*)``", item)
        modules = {module} | set(re.findall(r"``(hosts/trl/\w+\.py)``", item))
        for name in names:
            allowed.setdefault(name, set()).update(modules)
    return allowed


def _listed_private_names() -> dict[str, set[str]]:
    """TRL's private names listed in internals' docstring, and each module's own list in its docstring."""
    allowed: dict[str, set[str]] = {}
    for path, tree in MODULES.items():
        for name, modules in _listed(ast.get_docstring(tree) or "", _where(path)).items():
            allowed.setdefault(name, set()).update(modules)
    return allowed


def test_foreign_private_names_are_listed_and_used_only_where_listed():
    own, allowed = _own_names(), _listed_private_names()
    misplaced = {}
    for path, tree in MODULES.items():
        where = _where(path)
        names = {n for n in _foreign_private_names(tree, own) if where not in allowed.get(n, set())}
        if names:
            misplaced[where] = sorted(names)
    assert misplaced == {}, "foreign private names not listed in the docstring of the module that uses them"
    assert {"hosts/trl/internals.py"} <= allowed["_precompute_ref_logps"] and "_prepare_dataset" in allowed
    assert "forward/attention.py" in allowed["_attn_implementation"]


def test_the_private_name_scan_finds_what_it_should():
    """The scan itself: a foreign private attribute, a private import and a getattr name are found, our own names
    are not, and a private attribute of TRL's class is found even when we define one of that name."""
    source = (
        "from trl.data_utils import _tokenize\nx = trainer._metrics\nself._mine = 1\ny = self._mine\n"
        "z = getattr(config, '_attn_implementation', None)\nw = trl.DPOConfig._mine\n"
    )
    found = _foreign_private_names(ast.parse(source), {"_mine"})
    assert found == {"_tokenize", "_metrics", "_attn_implementation", "_mine"}


def test_no_library_code_patches_other_modules():
    for path, tree in MODULES.items():
        assert not {"unittest.mock", "mock"} & _imported_modules(tree), path
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "__dict__" and isinstance(node.ctx, ast.Load):
                owner = node.value
                assert path == INTERNALS or (isinstance(owner, ast.Name) and owner.id == "self"), (
                    f"{_where(path)}:{node.lineno} reads another object's __dict__"
                )


@pytest.mark.parametrize("folder", ["reference", "evaluation"])
def test_strategies_and_checks_never_touch_the_trainer(folder):
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not re.search(r"\btrainer\.", line), f"{_where(path)}:{number}: {line.strip()}"


def test_functions_are_short():
    long = []
    for path, tree in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{_where(path)}:{node.lineno} {node.name} ({length} lines)")
    assert long == []


def test_no_formatter_is_told_to_look_away():
    """``# fmt: skip``/``# fmt: off`` would let a line escape the 120-column rule that ruff enforces."""
    found = [
        f"{_where(path)}:{number}"
        for path in MODULES
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"#\s*fmt:\s*(skip|off)", line)
    ]
    assert found == []

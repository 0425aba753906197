"""Typed name → spec registries, filled through the ``register_*`` hooks.

Each kind of item (losses, reference strategies, adapters, judges, checks) has one
:class:`Registry`: a read-only mapping from name to a spec that records the object, the plugin that
supplied it and its metadata. Registering a name twice is a :class:`DuplicateNameError` naming both
plugins (unless the second registration passes ``override=True``); looking up an unknown name is an
:class:`UnknownNameError` listing the registered names and the closest match.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Self, TypeVar

from .errors import DuplicateNameError, PluginContractError, UnknownNameError
from .hookspecs import Register


def _summary(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


@dataclass(frozen=True)
class Spec:
    """A registered item: its ``name``, the ``obj`` itself and the ``plugin`` that registered it."""

    name: str
    obj: Any
    plugin: str
    description: str = ""

    @classmethod
    def build(cls, name: str, obj: Any, plugin: str, metadata: dict[str, Any]) -> Self:
        allowed = {f.name for f in dataclasses.fields(cls)} - {"name", "obj", "plugin"}
        unknown = set(metadata) - allowed
        if unknown:
            raise PluginContractError(
                f"Plugin {plugin!r} registered {name!r} with unknown metadata {sorted(unknown)}; "
                f"accepted: {sorted(allowed)}."
            )
        metadata.setdefault("description", _summary(obj))
        return cls(name=name, obj=obj, plugin=plugin, **metadata)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "plugin": self.plugin, "description": self.description}


def contract_error(plugin: str, kind: str, name: str, obj: Any, expected: str) -> PluginContractError:
    return PluginContractError(
        f"Plugin {plugin!r} registered {kind} {name!r} as {obj!r}; {expected}. "
        f"Fix the plugin, or block it with DPO_PLUGIN_BLOCK_PLUGINS={plugin}."
    )


def _takes_one_positional(obj: Any) -> bool:
    """Whether ``obj`` can be called with one positional argument (and keyword options)."""
    try:
        inspect.signature(obj).bind(None)
    except TypeError:
        return False
    except ValueError:  # a builtin without a signature: accept it
        return True
    return True


def _base_type(path: str) -> type:
    """The class a kind's items derive from, named ``module:Class`` so the registry imports no kind up front."""
    module, _, name = path.partition(":")
    base: type = getattr(importlib.import_module(module), name)
    return base


@dataclass(frozen=True)
class TypedSpec(Spec):
    """A registered item that must be a subclass (``subclass``) or an instance of the kind's base type ``base``."""

    base: ClassVar[str] = ""
    label: ClassVar[str] = ""
    subclass: ClassVar[bool] = False

    @classmethod
    def build(cls, name: str, obj: Any, plugin: str, metadata: dict[str, Any]) -> Self:
        base = _base_type(cls.base)
        fits = isinstance(obj, type) and issubclass(obj, base) if cls.subclass else isinstance(obj, base)
        if not fits:
            article = "an" if base.__name__[0] in "AEIOU" else "a"
            expected = (
                f"a subclass of {base.__name__} (the class)" if cls.subclass else f"{article} {base.__name__} instance"
            )
            raise contract_error(plugin, cls.label, name, obj, f"it must be {expected}")
        return super().build(name, obj, plugin, metadata)


@dataclass(frozen=True)
class StrategySpec(TypedSpec):
    """A registered reference strategy: a subclass of :class:`~dpo_plugin.reference.base.ReferenceStrategy`."""

    base: ClassVar[str] = "dpo_plugin.reference.base:ReferenceStrategy"
    label: ClassVar[str] = "reference strategy"
    subclass: ClassVar[bool] = True


@dataclass(frozen=True)
class AdapterSpec(TypedSpec):
    """A registered adapter recipe: an instance of :class:`~dpo_plugin.adapter_recipes.recipe.AdapterRecipe`."""

    base: ClassVar[str] = "dpo_plugin.adapter_recipes.recipe:AdapterRecipe"
    label: ClassVar[str] = "adapter"


@dataclass(frozen=True)
class HostSpec(TypedSpec):
    """A registered host: an instance of :class:`~dpo_plugin.hosts.base.Host` (a fine-tuning framework's trainer)."""

    base: ClassVar[str] = "dpo_plugin.hosts.base:Host"
    label: ClassVar[str] = "host"

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "trl_versions": self.obj.trl_versions}


@dataclass(frozen=True)
class JudgeSpec(Spec):
    """A registered judge: a factory, ``factory(**judge_params)`` → ``judge(prompts, first, second)``."""

    @classmethod
    def build(cls, name: str, obj: Any, plugin: str, metadata: dict[str, Any]) -> Self:
        if not callable(obj):
            raise contract_error(
                plugin, "judge", name, obj, "it must be a factory (a class or function) returning the judge"
            )
        return super().build(name, obj, plugin, metadata)


@dataclass(frozen=True)
class CheckSpec(Spec):
    """A registered post-training check: ``obj(ctx: EvalContext, **check_params) -> CheckResult``.

    ``needs_judge``: the check compares generations with a judge (the config must name one);
    ``needs_reference``: without a reference model the check is skipped with a reason;
    ``settings``: a callable validating ``check_params`` (e.g. a dataclass), called before training.
    """

    needs_judge: bool = False
    needs_reference: bool = True
    settings: Any = None

    @classmethod
    def build(cls, name: str, obj: Any, plugin: str, metadata: dict[str, Any]) -> Self:
        if not callable(obj) or not _takes_one_positional(obj):
            raise contract_error(plugin, "check", name, obj, "it must be a callable check(ctx, **check_params)")
        settings = metadata.get("settings")
        if settings is not None and not callable(settings):
            raise contract_error(plugin, "check", name, settings, "its settings must be a callable (e.g. a dataclass)")
        return super().build(name, obj, plugin, metadata)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "needs_judge": self.needs_judge, "needs_reference": self.needs_reference}


SpecT = TypeVar("SpecT", bound=Spec)


class Registry(Mapping[str, SpecT], Generic[SpecT]):
    """A read-only mapping name → spec for one kind of item (``kind`` is e.g. ``"loss"``)."""

    def __init__(self, kind: str, spec_type: type[SpecT]):
        self.kind = kind
        self._spec_type = spec_type
        self._specs: dict[str, SpecT] = {}

    def registrar(self, plugin: str) -> Register:
        """The ``register`` callback handed to one plugin's hook implementation."""

        def register(name: str, obj: Any, /, *, override: bool = False, **metadata: Any) -> None:
            self._add(plugin, name, obj, override=override, metadata=metadata)

        return register

    def _add(self, plugin: str, name: str, obj: Any, *, override: bool, metadata: dict[str, Any]) -> None:
        if not isinstance(name, str) or not name:
            raise PluginContractError(f"Plugin {plugin!r} registered a {self.kind} with invalid name {name!r}.")
        if name in self._specs and not override:
            first = self._specs[name].plugin
            raise DuplicateNameError(
                f"{self.kind.capitalize()} {name!r} is registered by two plugins: {first!r} and {plugin!r}. "
                f"Uninstall or block one (DPO_PLUGIN_BLOCK_PLUGINS={plugin}), or register with override=True."
            )
        self._specs[name] = self._spec_type.build(name, obj, plugin, dict(metadata))

    def __getitem__(self, name: str) -> SpecT:
        try:
            return self._specs[name]
        except (KeyError, TypeError):
            raise UnknownNameError(self.kind, name, self._specs) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __repr__(self) -> str:
        return f"<Registry of {len(self)} {self.kind} names: {', '.join(self._specs)}>"

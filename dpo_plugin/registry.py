"""Typed name → spec registries, filled through the ``register_*`` hooks.

Each kind of item (losses, reference strategies, adapters, judges, checks) has one
:class:`Registry`: a read-only mapping from name to a spec that records the object, the plugin that
supplied it and its metadata. Registering a name twice is a :class:`DuplicateNameError` naming both
plugins (unless the second registration passes ``override=True``); looking up an unknown name is an
:class:`UnknownNameError` listing the registered names and the closest match.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import DuplicateNameError, PluginContractError, UnknownNameError


class Register(Protocol):
    """The callback a ``register_*`` hook receives: ``register(name, obj, **metadata)``."""

    def __call__(self, name: str, obj: Any, /, *, override: bool = False, **metadata: Any) -> None: ...


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
    def build(cls, name: str, obj: Any, plugin: str, metadata: dict[str, Any]) -> Spec:
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


@dataclass(frozen=True)
class StrategySpec(Spec):
    """A registered reference strategy: a subclass of :class:`~dpo_plugin.reference.base.ReferenceStrategy`."""

    @classmethod
    def build(cls, name: str, obj: Any, plugin: str, metadata: dict[str, Any]) -> StrategySpec:
        from .reference.base import ReferenceStrategy

        if not (isinstance(obj, type) and issubclass(obj, ReferenceStrategy)):
            raise contract_error(plugin, "reference strategy", name, obj, "it must be a subclass of ReferenceStrategy (the class)")
        return super().build(name, obj, plugin, metadata)


@dataclass(frozen=True)
class AdapterSpec(Spec):
    """A registered adapter recipe: an instance of :class:`~dpo_plugin.adapter_recipes.recipe.AdapterRecipe`."""

    @classmethod
    def build(cls, name: str, obj: Any, plugin: str, metadata: dict[str, Any]) -> AdapterSpec:
        from .adapter_recipes.recipe import AdapterRecipe

        if not isinstance(obj, AdapterRecipe):
            raise contract_error(plugin, "adapter", name, obj, "it must be an AdapterRecipe instance")
        return super().build(name, obj, plugin, metadata)


@dataclass(frozen=True)
class JudgeSpec(Spec):
    """A registered judge: a factory, ``factory(**judge_params)`` → ``judge(prompts, first, second)``."""

    @classmethod
    def build(cls, name: str, obj: Any, plugin: str, metadata: dict[str, Any]) -> JudgeSpec:
        if not callable(obj):
            raise contract_error(plugin, "judge", name, obj, "it must be a factory (a class or function) returning the judge")
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
    def build(cls, name: str, obj: Any, plugin: str, metadata: dict[str, Any]) -> CheckSpec:
        if not callable(obj) or not _takes_one_positional(obj):
            raise contract_error(plugin, "check", name, obj, "it must be a callable check(ctx, **check_params)")
        settings = metadata.get("settings")
        if settings is not None and not callable(settings):
            raise contract_error(plugin, "check", name, settings, "its settings must be a callable (e.g. a dataclass)")
        return super().build(name, obj, plugin, metadata)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "needs_judge": self.needs_judge, "needs_reference": self.needs_reference}

class Registry(Mapping[str, Spec]):
    """A read-only mapping name → spec for one kind of item (``kind`` is e.g. ``"loss"``)."""

    def __init__(self, kind: str, spec_type: type[Spec] = Spec):
        self.kind = kind
        self._spec_type = spec_type
        self._specs: dict[str, Spec] = {}

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

    def __getitem__(self, name: str) -> Spec:
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


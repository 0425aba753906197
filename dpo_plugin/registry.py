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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import ConfigError, DuplicateNameError, PluginContractError, UnknownNameError


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


# Constraints on loss parameters, by parameter name, checked before training starts.
_PARAM_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "beta": (lambda v: v > 0, "must be > 0"),
    "label_smoothing": (lambda v: 0 <= v < 0.5, "must lie in [0, 0.5)"),
}


def _coerce(loss: str, key: str, value: Any, default: Any) -> Any:
    """Check ``value`` against the type of the parameter's default (ints are accepted for floats)."""
    if default is inspect.Parameter.empty or default is None:
        return value
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
        raise ConfigError(
            f"Parameter {key!r} of loss {loss!r} must be a {expected.__name__}, got {value!r} ({type(value).__name__})."
        )
    return value


@dataclass(frozen=True)
class LossSpec(Spec):
    """A registered loss.

    ``obj`` is a function ``fn(logps, **params) -> LossOutput`` or, with ``factory=True``, a class
    whose instances (``obj(**params)``) are called as ``instance(logps)`` and may keep state.
    ``params`` maps each parameter the loss takes to its default (``inspect.Parameter.empty`` when
    required), read from the signature.
    """

    needs_reference: bool = True
    batch_coupled: bool = False
    factory: bool = False
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, name: str, obj: Any, plugin: str, metadata: dict[str, Any]) -> LossSpec:
        if not callable(obj):
            raise PluginContractError(f"Plugin {plugin!r} registered loss {name!r} as {obj!r}, which is not callable.")
        if "params" in metadata:
            raise PluginContractError(
                f"Plugin {plugin!r}: the parameters of loss {name!r} are read from its signature, not passed."
            )
        signature = inspect.signature(obj)
        parameters = list(signature.parameters.values())
        if not metadata.get("factory", False):
            if not parameters or parameters[0].kind not in (
                inspect.Parameter.POSITIONAL_ONLY,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
            ):
                raise PluginContractError(
                    f"Plugin {plugin!r}: loss {name!r} must take the PairLogps as its first positional argument."
                )
            parameters = parameters[1:]
        params = {
            p.name: p.default
            for p in parameters
            if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        }
        metadata["params"] = params
        return super().build(name, obj, plugin, metadata)

    @property
    def supports_f_divergence(self) -> bool:
        """Whether the loss takes TRL's ``f_divergence_type`` (losses built on the reward difference)."""
        return "f_divergence_type" in self.params

    def resolve_params(
        self, overrides: Mapping[str, Any] | None = None, config: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The parameters to call the loss with.

        Precedence: ``overrides`` (the config's ``loss_params[name]``) > ``config`` (DPOConfig
        fields the user set explicitly) > the loss's own default. Unknown override keys, missing
        required parameters and out-of-range values are :class:`ConfigError`.
        """
        overrides = dict(overrides or {})
        config = config or {}
        unknown = set(overrides) - set(self.params)
        if unknown:
            takes = ", ".join(f"{k}={_fmt_default(v)}" for k, v in self.params.items()) or "no parameters"
            raise ConfigError(
                f"Loss {self.name!r} (plugin {self.plugin!r}) does not take {sorted(unknown)}; it takes: {takes}."
            )
        resolved: dict[str, Any] = {}
        for key, default in self.params.items():
            if key in overrides:
                value = overrides[key]
            elif key in config:
                value = config[key]
            elif default is not inspect.Parameter.empty:
                value = default
            else:
                raise ConfigError(
                    f"Loss {self.name!r} needs parameter {key!r}: set it under loss_params: {{{self.name}: {{{key}: ...}}}}."
                )
            value = _coerce(self.name, key, value, default)
            rule = _PARAM_RULES.get(key)
            if rule is not None and isinstance(value, (int, float)) and not rule[0](value):
                raise ConfigError(f"{key}={value!r} for loss {self.name!r}: {key} {rule[1]}.")
            resolved[key] = value
        return resolved

    def create(self, **params: Any) -> BoundLoss:
        """A callable ``loss(logps) -> LossOutput`` with ``params`` bound (a fresh instance for factories).

        ``params`` are checked and completed as :meth:`resolve_params` does (unknown names, ranges, defaults).
        """
        params = self.resolve_params(params)
        if self.factory:
            return BoundLoss(self, self.obj(**params), {})
        return BoundLoss(self, self.obj, params)

    def __call__(self, logps: Any, **params: Any) -> Any:
        """Call the loss as ``spec(logps, **params)``, validating what it returns."""
        return self.create(**params)(logps)

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "needs_reference": self.needs_reference,
            "batch_coupled": self.batch_coupled,
            "factory": self.factory,
            "supports_f_divergence": self.supports_f_divergence,
            "params": {k: (None if v is inspect.Parameter.empty else v) for k, v in self.params.items()},
        }


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

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "needs_judge": self.needs_judge, "needs_reference": self.needs_reference}


def _fmt_default(value: Any) -> str:
    return "<required>" if value is inspect.Parameter.empty else repr(value)


class BoundLoss:
    """A loss with its parameters bound; checks every output against the :class:`LossOutput` contract."""

    def __init__(self, spec: LossSpec, fn: Callable[..., Any], params: dict[str, Any]):
        self.spec, self.fn, self.params = spec, fn, params

    def __call__(self, logps: Any) -> Any:
        import torch

        from .types import LossOutput

        out = self.fn(logps, **self.params)
        who = f"Loss {self.spec.name!r} (plugin {self.spec.plugin!r})"
        if not isinstance(out, LossOutput):
            raise PluginContractError(f"{who} returned {type(out).__name__}; a loss must return a LossOutput.")
        for attr in ("losses", "chosen_rewards", "rejected_rewards"):
            value = getattr(out, attr)
            if not torch.is_tensor(value):
                raise PluginContractError(f"{who} returned {attr} of type {type(value).__name__}; expected a tensor.")
            if value.shape != logps.chosen.shape:
                raise PluginContractError(
                    f"{who} returned {attr} of shape {tuple(value.shape)}; expected per-pair values of shape "
                    f"{tuple(logps.chosen.shape)} (do not reduce over the batch)."
                )
        outputs = torch.stack([out.losses, out.chosen_rewards, out.rejected_rewards]).detach()
        if not bool(torch.isfinite(outputs).all()):  # one device sync per step; name the culprit only on failure
            attr, value = next(
                (attr, row) for attr, row in zip(("losses", "chosen_rewards", "rejected_rewards"), outputs)
                if not bool(torch.isfinite(row).all())
            )
            raise PluginContractError(
                f"{who} returned non-finite {attr} {value.cpu().tolist()}; inputs had chosen logps "
                f"{logps.chosen.detach().cpu().tolist()}."
            )
        return out


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


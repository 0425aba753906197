"""The spec of a registered loss: its parameters read from the signature, their rules, and the bound callable.

A loss is registered as ``register(name, fn, needs_reference=..., batch_coupled=..., factory=...)``;
:class:`LossSpec` records it, resolves the parameters a run calls it with (``loss_params`` >
DPOConfig fields set explicitly > the loss's own defaults, each checked against its rule) and
:class:`BoundLoss` checks every output against the :class:`~dpo_plugin.types.LossOutput` contract.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from .errors import ConfigError, PluginContractError
from .registry import Spec, contract_error

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
    def build(cls, name: str, obj: Any, plugin: str, metadata: dict[str, Any]) -> Self:
        if not callable(obj):
            raise contract_error(plugin, "loss", name, obj, "it is not callable (a loss is fn(logps, **params))")
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
                    f"Loss {self.name!r} needs parameter {key!r}: "
                    f"set it under loss_params: {{{self.name}: {{{key}: ...}}}}."
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


def _fmt_default(value: Any) -> str:
    return "<required>" if value is inspect.Parameter.empty else repr(value)


class BoundLoss:
    """A loss with its parameters bound; checks every output against the :class:`LossOutput` contract."""

    def __init__(self, spec: LossSpec, fn: Callable[..., Any], params: dict[str, Any]):
        self.spec, self.fn, self.params = spec, fn, params

    def __call__(self, logps: Any, *, check_finite: bool = True) -> Any:
        """The loss's output, checked against the contract (shapes; finite values unless ``check_finite=False``)."""
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
        if not check_finite:
            return out
        outputs = torch.stack([out.losses, out.chosen_rewards, out.rejected_rewards]).detach()
        if not bool(torch.isfinite(outputs).all()):  # one device sync per step; name the culprit only on failure
            attr, value = next(
                (attr, row)
                for attr, row in zip(("losses", "chosen_rewards", "rejected_rewards"), outputs)
                if not bool(torch.isfinite(row).all())
            )
            raise PluginContractError(
                f"{who} returned non-finite {attr} {value.cpu().tolist()}; inputs had chosen logps "
                f"{logps.chosen.detach().cpu().tolist()}."
            )
        return out

"""The weighted mix of registered losses a run trains with, resolved and validated from the config.

``loss = Σ_k w_k · mean_i(c_i · ℓ_k,i)``, where ``ℓ_k`` is the k-th loss's per-pair output, ``w_k``
its ``loss_weights`` entry and ``c_i`` the optional WPO pair weights (Zhou et al. 2024,
arXiv:2406.11827), as TRL 1.16 combines its ``loss_type`` list.

Parameter precedence: ``loss_params[name]`` > a DPOConfig field the user set explicitly > the loss's
own default. A field that some registered loss takes but none of the chosen losses does is an error
when set to a value other than TRL's default (the silent drop TRL users hit); set to TRL's default it
is accepted, as TRL accepts it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor

from .errors import ConfigError, DpoPluginError
from .loss_spec import BoundLoss, LossSpec
from .plugins import losses as loss_registry
from .registry import Registry
from .types import LossOutput, PairLogps


@dataclass
class Component:
    """One loss of the mix: its spec, resolved parameters, weight and bound callable."""

    spec: LossSpec
    params: dict[str, Any]
    weight: float
    loss: BoundLoss

    @property
    def name(self) -> str:
        return self.spec.name


class LossMix:
    """The resolved losses of a run; calling it gives the weighted scalar loss and each component's output."""

    def __init__(self, components: Sequence[Component]):
        self.components = list(components)
        self._reward_beta = next(
            (float(c.params["beta"]) for c in self.components if c.spec.needs_reference and "beta" in c.params), None
        )

    @property
    def needs_reference(self) -> bool:
        return any(c.spec.needs_reference for c in self.components)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.components]

    @property
    def weights(self) -> list[float]:
        return [c.weight for c in self.components]

    def reward_beta(self, default: float) -> float:
        """β of the implicit rewards ``β·(log π − log π_ref)``: the first reference-based loss's own β,
        else ``default``."""
        return self._reward_beta if self._reward_beta is not None else default

    def fresh(self) -> LossMix:
        """The same mix with new loss instances (a stateful loss, e.g. beta_dpo, starts over), without re-validating."""
        return LossMix([Component(c.spec, c.params, c.weight, c.spec.create(**c.params)) for c in self.components])

    def __call__(
        self, logps: PairLogps, pair_weights: Tensor | None = None, *, check_finite: bool = True
    ) -> tuple[Tensor, list[LossOutput]]:
        """The weighted loss and each component's output;
        ``check_finite=False`` leaves non-finite values to the caller."""
        total: Tensor | float = 0.0
        outputs = []
        for component in self.components:
            out = component.loss(logps, check_finite=check_finite)
            losses = out.losses if pair_weights is None else out.losses * pair_weights
            total = total + losses.mean() * component.weight
            outputs.append(out)
        return cast(Tensor, total), outputs  # a mix has at least one loss

    @classmethod
    def resolve(
        cls,
        loss_types: Sequence[str],
        loss_weights: Sequence[float] | None = None,
        loss_params: Mapping[str, Mapping[str, Any]] | None = None,
        explicit: Mapping[str, Any] | None = None,
        *,
        defaults: Mapping[str, Any] | None = None,
        reference_available: bool = True,
        use_weighting: bool = False,
        allow_negative_weights: bool = False,
    ) -> LossMix:
        """Resolve names, parameters and weights; every inconsistency is a :class:`ConfigError`.

        ``explicit`` holds the DPOConfig fields the user set (name → value), ``defaults`` TRL's default
        of each field. Each loss is called once on a tiny synthetic batch so bad parameters fail here.
        """
        registry = loss_registry()
        loss_params = dict(loss_params or {})
        weights = _weights(loss_types, loss_weights, allow_negative_weights)
        specs = [registry[name] for name in loss_types]
        _check_loss_params(loss_params, loss_types)
        config_values = _config_values(registry, specs, dict(explicit or {}), dict(defaults or {}))
        _check_f_divergence(registry, specs, (explicit or {}).get("f_divergence_type", "reverse_kl"))
        _check_combination(registry, specs, reference_available=reference_available, use_weighting=use_weighting)
        components = []
        for spec, weight in zip(specs, weights):
            params = spec.resolve_params(loss_params.get(spec.name), config_values)
            _dry_run(spec, params)
            components.append(Component(spec, params, weight, spec.create(**params)))
        return cls(components)


def _weights(loss_types: Sequence[str], loss_weights: Sequence[float] | None, allow_negative: bool) -> list[float]:
    if not loss_types:
        raise ConfigError("loss_type is empty: name at least one loss (see `dpo-plugin losses`).")
    if len(set(loss_types)) != len(loss_types):
        raise ConfigError(f"loss_type lists a loss twice: {list(loss_types)}; give it one weight instead.")
    weights = [float(w) for w in loss_weights] if loss_weights is not None else [1.0] * len(loss_types)
    if len(weights) != len(loss_types):
        raise ConfigError(
            f"loss_weights has {len(weights)} values for {len(loss_types)} losses {list(loss_types)}: "
            "give one weight per loss, in the same order."
        )
    negative = [(name, w) for name, w in zip(loss_types, weights) if w < 0]
    if negative and not allow_negative:
        name, weight = negative[0]
        raise ConfigError(
            f"loss_weights gives {name} the weight {weight}: a negative weight maximises that loss (for sft: makes "
            "the chosen answers less likely). Use a weight >= 0, or set allow_negative_loss_weights: true if you "
            "mean it."
        )
    return weights


def _check_loss_params(loss_params: Mapping[str, Any], loss_types: Sequence[str]) -> None:
    stray = set(loss_params) - set(loss_types)
    if stray:
        raise ConfigError(
            f"loss_params names {sorted(stray)}, which {'is' if len(stray) == 1 else 'are'} not in "
            f"loss_type {list(loss_types)}; add the loss to loss_type or remove its parameters."
        )
    for name, params in loss_params.items():
        if not isinstance(params, Mapping):
            raise ConfigError(f"loss_params[{name!r}] must be a mapping of parameter → value, got {params!r}.")


def _config_values(
    registry: Registry, specs: Sequence[LossSpec], explicit: dict[str, Any], defaults: dict[str, Any]
) -> dict[str, Any]:
    """The explicit config fields that are loss parameters; a non-default one no chosen loss takes is an error."""
    all_params = {p for spec in registry.values() for p in spec.params}
    chosen_params = {p for spec in specs for p in spec.params}
    config_values = {k: v for k, v in explicit.items() if k in all_params}
    missing = object()
    for key in sorted(set(config_values) - chosen_params):
        if config_values[key] == defaults.get(key, missing):
            continue  # TRL's own default, as TRL's examples spell it out: never an error
        users = sorted(n for n, s in registry.items() if key in s.params)
        raise ConfigError(
            f"{key}={config_values[key]!r} is set, but none of the chosen losses {[s.name for s in specs]} uses it; "
            f"losses that take {key}: {', '.join(users)}. Choose one of them or remove {key}."
        )
    return config_values


def _check_f_divergence(registry: Registry, specs: Sequence[LossSpec], f_divergence_type: str) -> None:
    if f_divergence_type == "reverse_kl":
        return
    unsupported = [s.name for s in specs if s.needs_reference and not s.supports_f_divergence]
    if unsupported:
        supported = sorted(n for n, s in registry.items() if s.supports_f_divergence)
        raise ConfigError(
            f"f_divergence_type={f_divergence_type!r} has no valid generalisation for {unsupported}; losses that "
            f"support it: {', '.join(supported)}."
        )


def _check_combination(
    registry: Registry, specs: Sequence[LossSpec], *, reference_available: bool, use_weighting: bool
) -> None:
    coupled = [s.name for s in specs if s.batch_coupled]
    if use_weighting and coupled:
        raise ConfigError(
            f"use_weighting (WPO) cannot weight pairs of {coupled}: they sort or mix across the batch, "
            "so per-pair weights would be misaligned. Set use_weighting: false or choose another loss."
        )
    needing = [s.name for s in specs if s.needs_reference]
    if not reference_available and needing:
        free = sorted(n for n, s in registry.items() if not s.needs_reference)
        raise ConfigError(
            f"reference: none, but {needing} need a reference model. Choose another reference strategy, "
            f"or reference-free losses: {', '.join(free)}."
        )


def _dry_run(spec: LossSpec, params: dict[str, Any]) -> None:
    """Call a fresh instance of the loss on a tiny synthetic batch so bad parameters fail before training."""
    logps = PairLogps(
        chosen=torch.tensor([-4.0, -6.0]),
        rejected=torch.tensor([-5.0, -5.5]),
        ref_chosen=torch.tensor([-4.5, -6.0]),
        ref_rejected=torch.tensor([-4.8, -5.0]),
        chosen_tokens=torch.tensor([3, 4]),
        rejected_tokens=torch.tensor([4, 3]),
    )
    try:
        spec.create(**params)(logps)
    except DpoPluginError:
        raise
    except (ValueError, TypeError) as error:
        raise ConfigError(
            f"Loss {spec.name!r} (plugin {spec.plugin!r}) rejects its parameters {params}: {error}"
        ) from None

"""``DPOConfig``: TRL's config with every TRL field, plus the plugin fields
(:class:`~dpo_plugin.settings.PluginSettings`).

TRL's own fields that say the same as a plugin field map onto it: ``precompute_ref_log_probs: true``
means ``reference: precomputed``, ``sync_ref_model: true`` means ``reference: sync`` (with
``ref_model_sync_steps``/``ref_model_mixup_alpha``), ``padding_free: true`` means ``packing: padding_free``;
setting both sides inconsistently is an error. ``loss_type`` takes any registered loss name (or a list,
mixed with TRL's ``loss_weights``).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import trl

from ...errors import ConfigError
from ...loss_mix import LossMix
from ...settings import DICT_FIELDS, PluginSettings
from .internals import TRL_DEFAULTS, loss_request

logger = logging.getLogger(__name__)


@dataclass
class _PluginFields(PluginSettings, trl.DPOConfig):
    """TRL's ``DPOConfig`` fields, then the plugin's (the generated ``__init__`` takes them all, TRL's first)."""

    _VALID_DICT_FIELDS = trl.DPOConfig._VALID_DICT_FIELDS + list(DICT_FIELDS)

    def __post_init__(self) -> None:
        if isinstance(self.loss_type, str):
            self.loss_type = [self.loss_type]
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ConfigError(
                f"loss_weights has {len(self.loss_weights)} values for {len(self.loss_type)} losses "
                f"{list(self.loss_type)}: give one weight per loss, in the same order."
            )
        self._cpu_processes_together()
        self._positive_counts()
        try:
            trl.DPOConfig.__post_init__(self)
        except ValueError as error:
            if "bf16" in str(error):
                raise ConfigError(
                    "bf16 is enabled (TRL's DPOConfig defaults to bf16=True) but this machine does not support "
                    "bf16 training (no suitable GPU). Set `bf16: false` in the YAML (or `--bf16 false`, or "
                    f"DPOConfig(bf16=False)). Original error: {error}"
                ) from None
            raise
        self.normalise()
        map_trl_fields(self, {name: getattr(self, name) for name in TRL_SETTING_FIELDS}, self.explicit_fields)
        self.check()
        self.loss_mix()

    # -- validation -----------------------------------------------------------------------------
    def _cpu_processes_together(self) -> None:
        """Several processes (torchrun) on a machine without an accelerator train together on CPU (gloo).

        Without ``use_cpu``, transformers runs each of them as an independent one-process training,
        all writing to the same output_dir.
        """
        import torch

        processes = int(os.environ.get("WORLD_SIZE", "1"))
        if processes > 1 and not self.use_cpu and not torch.accelerator.is_available():
            logger.info(
                "%d processes on a machine without a GPU: use_cpu=True, so they train together (gloo).", processes
            )
            self.use_cpu = True

    def _positive_counts(self) -> None:
        """Batch sizes and accumulation steps of at least 1 (torch's sampler would refuse 0 after the model loaded)."""
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}.")

    # -- plugin plans ---------------------------------------------------------------------------
    @property
    def explicit_fields(self) -> frozenset[str]:
        """The fields the user set: those the config was built with, and any TRL field whose value is not TRL's default.

        (A field assigned after construction counts as set once it differs from TRL's default.)
        """
        changed = {name for name, default in TRL_DEFAULTS.items() if self.__dict__.get(name, default) != default}
        return self.__dict__.get("_explicit_fields", frozenset()) | frozenset(changed)

    def loss_mix(self) -> LossMix:
        """The resolved, validated :class:`~dpo_plugin.loss_mix.LossMix` (``.fresh()`` per trainer).

        Resolved again only when a field it depends on changed since (TRL reads the fields when a
        trainer is built, so ``args.beta = 0.5`` after construction must count).
        """
        return self.resolve_loss_mix(loss_request(self, self.explicit_fields))


class DPOConfig(_PluginFields):
    """TRL's ``DPOConfig`` plus the plugin fields (see the module docstring).

    The fields set explicitly (:attr:`explicit_fields`) are the constructor's keywords: parsers build
    it from the keys the user gave, so that a loss's own default applies unless the user set the field.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        names = [f.name for f in dataclasses.fields(self) if f.init]
        self.__dict__["_explicit_fields"] = frozenset(names[: len(args)]) | frozenset(kwargs)
        super().__init__(*args, **kwargs)

    __init__.__signature__ = inspect.signature(_PluginFields.__init__)  # type: ignore[attr-defined]


#: TRL's ``DPOConfig`` fields that say what a plugin field says (mapped by :func:`map_trl_fields`).
TRL_SETTING_FIELDS = (
    "padding_free",
    "precompute_ref_log_probs",
    "precompute_ref_batch_size",
    "sync_ref_model",
    "ref_model_sync_steps",
    "ref_model_mixup_alpha",
)


def map_trl_fields(settings: PluginSettings, trl_fields: Mapping[str, Any], explicit: Collection[str]) -> None:
    """TRL's fields onto the plugin's: ``padding_free`` → ``packing``, ``precompute_ref_log_probs`` /
    ``precompute_ref_batch_size`` / ``sync_ref_model`` (+ its steps and α) → ``reference`` and its params.

    ``trl_fields``: the values of :data:`TRL_SETTING_FIELDS` (a host's config, e.g. Axolotl's keys mapped);
    ``explicit``: the fields the user set. Both sides set inconsistently is a ConfigError naming both.
    """
    _map_padding_free(settings, bool(trl_fields.get("padding_free")))
    _map_precompute(
        settings, bool(trl_fields.get("precompute_ref_log_probs")), trl_fields.get("precompute_ref_batch_size")
    )
    if trl_fields.get("sync_ref_model"):
        _map_sync(settings, trl_fields, explicit)


def _map_padding_free(settings: PluginSettings, padding_free: bool) -> None:
    if padding_free:
        if settings.packing not in ("auto", "padding_free"):
            raise ConfigError(
                f"padding_free: true (TRL) means packing: padding_free, but packing is {settings.packing!r}. "
                "Set only one."
            )
        settings.packing = "padding_free"


def _map_precompute(settings: PluginSettings, precompute: bool, batch_size: int | None) -> None:
    if precompute:
        if settings.reference not in ("auto", "precomputed"):
            raise ConfigError(
                f"precompute_ref_log_probs: true (TRL) means reference: precomputed, but reference is "
                f"{settings.reference!r}. Set only one of them."
            )
        settings.reference = "precomputed"
    if batch_size is not None:
        params = settings.options("reference_params")
        if params.setdefault("batch_size", batch_size) != batch_size:
            raise ConfigError(
                f"reference_params.batch_size={params['batch_size']!r} contradicts TRL's precompute_ref_batch_size="
                f"{batch_size!r}; set one."
            )
        if settings.reference not in ("auto", "precomputed"):
            raise ConfigError(
                f"precompute_ref_batch_size is set, but reference is {settings.reference!r}, which precomputes "
                "nothing; remove it or use reference: precomputed."
            )
        settings.reference_params = params


def _map_sync(settings: PluginSettings, trl_fields: Mapping[str, Any], explicit: Collection[str]) -> None:
    if settings.reference not in ("auto", "sync"):
        raise ConfigError(
            f"sync_ref_model: true (TRL) means reference: sync, but reference is {settings.reference!r}. "
            "Set only one of them."
        )
    if trl_fields.get("precompute_ref_log_probs"):
        raise ConfigError("sync_ref_model and precompute_ref_log_probs exclude each other: a synced reference changes.")
    params = settings.options("reference_params")
    for key, trl_field in (("sync_steps", "ref_model_sync_steps"), ("alpha", "ref_model_mixup_alpha")):
        value = trl_fields[trl_field]
        if key in params and trl_field in explicit and params[key] != value:
            raise ConfigError(
                f"reference_params.{key}={params[key]!r} contradicts TRL's {trl_field}={value!r}; set one."
            )
        params.setdefault(key, value)
    settings.reference = "sync"
    settings.reference_params = params

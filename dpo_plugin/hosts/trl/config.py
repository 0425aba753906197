"""``DPOConfig``: TRL's config with every TRL field, plus the plugin fields.

Plugin fields (all optional): ``loss_type`` accepts any registered loss name (or a list, mixed with
TRL's ``loss_weights``); ``loss_params`` maps a loss name to its parameters; ``reference`` /
``reference_params`` choose the reference-model strategy; ``adapter`` / ``adapter_params`` the peft
recipe; ``checks`` / ``check_params`` / ``judge`` / ``judge_params`` / ``strict_checks`` the
post-training checks; ``kl_warn``, ``merge_adapter``, ``allow_data_errors``.

TRL's own reference fields map onto ``reference``: ``precompute_ref_log_probs: true`` means
``reference: precomputed`` and ``sync_ref_model: true`` means ``reference: sync`` (with
``ref_model_sync_steps``/``ref_model_mixup_alpha``); setting both sides inconsistently is an error.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import trl

from ...errors import ConfigError
from ...evaluation.runner import validate_check_params
from ...loss_mix import LossMix
from ...plugins import adapters, checks, judges, reference_strategies

logger = logging.getLogger(__name__)

PACKING_MODES = ("auto", "none", "padding_free", "prefix_sharing")
PLUGIN_DICT_FIELDS = ("loss_params", "reference_params", "adapter_params", "check_params", "judge_params")
#: TRL 1.16's default of every DPOConfig field (a field set to its default is never refused).
TRL_DEFAULTS = {
    f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    for f in dataclasses.fields(trl.DPOConfig)
    if f.init
}


@dataclass
class _PluginFields(trl.DPOConfig):
    """TRL's ``DPOConfig`` fields plus the plugin's (the generated ``__init__`` takes them all)."""

    _VALID_DICT_FIELDS = trl.DPOConfig._VALID_DICT_FIELDS + list(PLUGIN_DICT_FIELDS)

    loss_params: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Parameters per loss, e.g. {simpo: {gamma: 0.5}}. Precedence: loss_params > DPOConfig field > loss default."},
    )
    reference: str = field(
        default="auto",
        metadata={"help": "Reference-model strategy (`dpo-plugin plugins` lists them): auto, copy, path, adapter, precomputed, none, sync."},
    )
    reference_params: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Options of the reference strategy, e.g. {model: PATH} for `path`."}
    )
    adapter: str = field(
        default="none", metadata={"help": "Adapter recipe: none (full fine-tune), lora, dora, rslora, pissa, olora, qlora."}
    )
    adapter_params: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Options of the adapter recipe, e.g. {r: 16, target_modules: all-linear}."}
    )
    checks: list[str] = field(
        default_factory=list, metadata={"help": "Post-training checks to run, e.g. reward_margin win_rate."}
    )
    check_params: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Options per check, e.g. {win_rate: {threshold: 0.5, max_new_tokens: 32}}."}
    )
    judge: str | None = field(default=None, metadata={"help": "Judge for the win-rate check: function, reward_model, llm, openai."})
    judge_params: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Options of the judge, e.g. {function: 'module:attr'}."}
    )
    strict_checks: bool = field(
        default=False,
        metadata={"help": "dpo-plugin train exits 1 when a requested check does not pass (in Python, read trainer.check_report['passed'])."},
    )
    kl_warn: float | None = field(
        default=1.0,
        metadata={"help": "Warn once when the mean per-token log-ratio policy/reference on the chosen completions exceeds this in size."},
    )
    merge_adapter: bool = field(
        default=False, metadata={"help": "After training a PEFT adapter, also save a merged full model in <output_dir>/merged."}
    )
    allow_data_errors: bool = field(
        default=False, metadata={"help": "Train even when the data-quality checks find errors (they are logged)."}
    )
    packing: str = field(
        default="auto",
        metadata={
            "help": "Batch layout: auto (prefix_sharing where the model takes it, else none), none (TRL's padded "
            "[chosen; rejected] rows), padding_free, prefix_sharing. TRL's padding_free: true means padding_free."
        },
    )
    nonfinite: str = field(
        default="stop",
        metadata={
            "help": "A non-finite loss or gradient: stop (at once, exit 3, naming the last good checkpoint) or skip "
            "(drop that update; stop after max_skipped_steps in a row). Non-finite weights are never saved."
        },
    )
    max_skipped_steps: int = field(default=5, metadata={"help": "With nonfinite: skip, the steps dropped in a row before stopping."})
    reuse_output_dir: bool = field(
        default=False,
        metadata={"help": "Let dpo-plugin train write into a non-empty output_dir; files it did not write are never changed."},
    )
    allow_negative_loss_weights: bool = field(
        default=False,
        metadata={"help": "Accept a negative loss_weights entry (it maximises that loss; refused by default)."},
    )

    def __post_init__(self) -> None:
        if isinstance(self.loss_type, str):
            self.loss_type = [self.loss_type]
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ConfigError(
                f"loss_weights has {len(self.loss_weights)} values for {len(self.loss_type)} losses "
                f"{list(self.loss_type)}: give one weight per loss, in the same order."
            )
        self._cpu_processes_together()
        try:
            super().__post_init__()
        except ValueError as error:
            if "bf16" in str(error):
                raise ConfigError(
                    "bf16 is enabled (TRL's DPOConfig defaults to bf16=True) but this machine does not support "
                    "bf16 training (no suitable GPU). Set `bf16: false` in the YAML (or `--bf16 false`, or "
                    f"DPOConfig(bf16=False)). Original error: {error}"
                ) from None
            raise
        self._check_dict_fields()
        self._check_fault_fields()
        self._map_trl_padding_free()
        self._map_trl_reference_fields()
        self._check_names()
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
            logger.info("%d processes on a machine without a GPU: use_cpu=True, so they train together (gloo).", processes)
            self.use_cpu = True

    def _check_dict_fields(self) -> None:
        for name in PLUGIN_DICT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    value = json.loads(value) if value.strip() else None
                except json.JSONDecodeError as error:
                    raise ConfigError(f"{name} must be a mapping (YAML) or a JSON object string: {error}") from None
                setattr(self, name, value)
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"{name} must be a mapping, got {type(value).__name__} {value!r}.")
        for name in ("check_params", "loss_params"):
            for key, value in (getattr(self, name) or {}).items():
                if not isinstance(value, dict):
                    raise ConfigError(f"{name}[{key!r}] must be a mapping of option → value, got {value!r}.")
        if isinstance(self.checks, str):
            self.checks = [self.checks]

    def _check_fault_fields(self) -> None:
        if self.nonfinite not in ("stop", "skip"):
            raise ConfigError(f"nonfinite must be stop or skip, got {self.nonfinite!r}.")
        if isinstance(self.max_skipped_steps, bool) or not isinstance(self.max_skipped_steps, int) or self.max_skipped_steps < 1:
            raise ConfigError(f"max_skipped_steps must be an integer >= 1, got {self.max_skipped_steps!r}.")

    def _map_trl_padding_free(self) -> None:
        if self.packing not in PACKING_MODES:
            raise ConfigError(f"packing must be one of {', '.join(PACKING_MODES)}, got {self.packing!r}.")
        if self.padding_free:
            if self.packing not in ("auto", "padding_free"):
                raise ConfigError(
                    f"padding_free: true (TRL) means packing: padding_free, but packing is {self.packing!r}. Set only one."
                )
            self.packing = "padding_free"

    def _map_trl_reference_fields(self) -> None:
        if self.precompute_ref_log_probs:
            if self.reference not in ("auto", "precomputed"):
                raise ConfigError(
                    f"precompute_ref_log_probs: true (TRL) means reference: precomputed, but reference is "
                    f"{self.reference!r}. Set only one of them."
                )
            self.reference = "precomputed"
        if self.precompute_ref_batch_size is not None:
            params = dict(self.reference_params or {})
            if params.setdefault("batch_size", self.precompute_ref_batch_size) != self.precompute_ref_batch_size:
                raise ConfigError(
                    f"reference_params.batch_size={params['batch_size']!r} contradicts TRL's precompute_ref_batch_size="
                    f"{self.precompute_ref_batch_size!r}; set one."
                )
            if self.reference not in ("auto", "precomputed"):
                raise ConfigError(
                    f"precompute_ref_batch_size is set, but reference is {self.reference!r}, which precomputes nothing; "
                    "remove it or use reference: precomputed."
                )
            self.reference_params = params
        if self.sync_ref_model:
            if self.reference not in ("auto", "sync"):
                raise ConfigError(
                    f"sync_ref_model: true (TRL) means reference: sync, but reference is {self.reference!r}. "
                    "Set only one of them."
                )
            if self.precompute_ref_log_probs:
                raise ConfigError("sync_ref_model and precompute_ref_log_probs exclude each other: a synced reference changes.")
            params = dict(self.reference_params or {})
            for key, trl_field in (("sync_steps", "ref_model_sync_steps"), ("alpha", "ref_model_mixup_alpha")):
                value = getattr(self, trl_field)
                if key in params and trl_field in self.explicit_fields and params[key] != value:
                    raise ConfigError(
                        f"reference_params.{key}={params[key]!r} contradicts TRL's {trl_field}={value!r}; set one."
                    )
                params.setdefault(key, value)
            self.reference = "sync"
            self.reference_params = params

    def _check_names(self) -> None:
        reference_strategies()[self.reference]
        adapters()[self.adapter]
        registered_checks = checks()
        for name in self.checks:
            registered_checks[name]
        if self.judge is not None:
            judges()[self.judge]
        stray = set(self.check_params or {}) - set(self.checks)
        if stray:
            raise ConfigError(f"check_params names {sorted(stray)}, which are not in checks {self.checks}.")
        if self.judge_params and self.judge is None:
            raise ConfigError("judge_params is set but judge is not: name the judge, e.g. judge: function.")
        validate_check_params(self.checks, self.check_params, self.judge)

    # -- plugin plans ---------------------------------------------------------------------------
    @property
    def explicit_fields(self) -> frozenset[str]:
        """The fields the user set: those the config was built with, and any TRL field whose value is not TRL's default.

        (A field assigned after construction counts as set once it differs from TRL's default.)
        """
        changed = {name for name, default in TRL_DEFAULTS.items() if self.__dict__.get(name, default) != default}
        return self.__dict__.get("_explicit_fields", frozenset()) | frozenset(changed)

    def _resolve_loss_mix(self) -> LossMix:
        explicit = {name: getattr(self, name) for name in self.explicit_fields if hasattr(self, name)}
        return LossMix.resolve(
            self.loss_type,
            self.loss_weights,
            self.loss_params,
            explicit,
            defaults=TRL_DEFAULTS,
            reference_available=self.reference != "none",
            use_weighting=self.use_weighting,
            allow_negative_weights=self.allow_negative_loss_weights,
        )

    def _loss_inputs(self) -> str:
        """Everything the loss mix is resolved from, as it stands now."""
        params = {name: getattr(self, name) for name in sorted(self.explicit_fields) if name in TRL_DEFAULTS}
        plan = (self.loss_type, self.loss_weights, self.loss_params, self.reference, self.use_weighting)
        return repr((plan, self.allow_negative_loss_weights, params))

    def loss_mix(self) -> LossMix:
        """The resolved, validated :class:`~dpo_plugin.loss_mix.LossMix` (``.fresh()`` per trainer).

        Resolved once, and again only when a field it depends on changed since (TRL reads the fields
        when a trainer is built, so ``args.beta = 0.5`` after construction must count).
        """
        inputs = self._loss_inputs()
        if self.__dict__.get("_loss_mix_inputs") != inputs:
            self.__dict__["_loss_mix"] = self._resolve_loss_mix()
            self.__dict__["_loss_mix_inputs"] = inputs
        return self.__dict__["_loss_mix"]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_loss_mix", None)  # may hold plugin functions that do not pickle (training_args.bin)
        state.pop("_loss_mix_inputs", None)
        return state


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

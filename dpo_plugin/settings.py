"""The plugin's own settings: the same fields, defaults and rules under every host.

:class:`PluginSettings` is a plain dataclass; a host's config either is one (TRL's ``DPOConfig``
subclasses it) or builds one from its own YAML keys (Axolotl's plugin). :meth:`PluginSettings.normalise`
parses JSON strings of the dict fields and checks the enumerations; :meth:`PluginSettings.check`
checks every name against the registries and the check settings, before any model loads. A host
maps its own equivalents (TRL's ``precompute_ref_log_probs``, ``padding_free`` …) between the two.

The loss fields that hosts already have (TRL's ``loss_type``, ``loss_weights``, ``beta``,
``label_smoothing`` …) are not repeated here: a host hands them over as a :class:`LossRequest`,
and :meth:`PluginSettings.resolve_loss_mix` resolves the run's :class:`~dpo_plugin.loss_mix.LossMix` from it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .loss_mix import LossMix

PACKING_MODES = ("auto", "none", "padding_free", "prefix_sharing")
NONFINITE_MODES = ("stop", "skip")
DICT_FIELDS = ("loss_params", "reference_params", "adapter_params", "check_params", "judge_params")


@dataclass(frozen=True)
class LossRequest:
    """What a host's config says about the loss: the names and weights, and the loss fields the user set.

    ``explicit``: the host's config fields the user set (name → value: ``beta``, ``label_smoothing`` …);
    ``defaults``: the host's default of each field (a field left at its default is never refused);
    ``beta``: the host's β, for the implicit rewards when no chosen loss has a β of its own.
    """

    types: tuple[str, ...]
    weights: tuple[float, ...] | None = None
    explicit: Mapping[str, Any] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    beta: float = 0.1
    use_weighting: bool = False


@dataclass
class PluginSettings:
    """The plugin fields, as every host's YAML spells them (see the module docstring)."""

    loss_params: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Parameters per loss, e.g. {simpo: {gamma: 0.5}}. Precedence: loss_params > DPOConfig field > "
            "loss default."
        },
    )
    reference: str = field(
        default="auto",
        metadata={
            "help": "Reference-model strategy (`dpo-plugin plugins` lists them): auto, copy, path, adapter, "
            "precomputed, none, sync."
        },
    )
    reference_params: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Options of the reference strategy, e.g. {model: PATH} for `path`."}
    )
    adapter: str = field(
        default="none",
        metadata={"help": "Adapter recipe: none (full fine-tune), lora, dora, rslora, pissa, olora, qlora."},
    )
    adapter_params: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Options of the adapter recipe, e.g. {r: 16, target_modules: all-linear}."}
    )
    checks: list[str] = field(
        default_factory=list, metadata={"help": "Post-training checks to run, e.g. reward_margin win_rate."}
    )
    check_params: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Options per check, e.g. {win_rate: {threshold: 0.5, max_new_tokens: 32}}."},
    )
    judge: str | None = field(
        default=None, metadata={"help": "Judge for the win-rate check: function, reward_model, llm, openai."}
    )
    judge_params: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Options of the judge, e.g. {function: 'module:attr', timeout: 60}. A module:attr runs that "
            "module's code (its file is logged), as trust_remote_code does."
        },
    )
    strict_checks: bool = field(
        default=False,
        metadata={
            "help": "dpo-plugin train exits 1 when a requested check does not pass (in Python, read "
            "trainer.check_report['passed'])."
        },
    )
    kl_warn: float | None = field(
        default=1.0,
        metadata={
            "help": "Warn once when the mean per-token log-ratio policy/reference on the chosen completions exceeds "
            "this in size."
        },
    )
    merge_adapter: bool = field(
        default=False,
        metadata={"help": "After training a PEFT adapter, also save a merged full model in <output_dir>/merged."},
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
    max_skipped_steps: int = field(
        default=5, metadata={"help": "With nonfinite: skip, the steps dropped in a row before stopping."}
    )
    reuse_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Let dpo-plugin train write into a non-empty output_dir; files it did not write are never changed."
        },
    )
    resume_changed: bool = field(
        default=False,
        metadata={
            "help": "Resume a checkpoint although the run changed since it was saved (losses, reference, data, "
            "max_length; refused by default, naming each change). Another architecture is refused always."
        },
    )
    allow_negative_loss_weights: bool = field(
        default=False,
        metadata={"help": "Accept a negative loss_weights entry (it maximises that loss; refused by default)."},
    )

    def __post_init__(self) -> None:
        self.normalise()
        self.check()

    def normalise(self) -> None:
        """Dict fields from JSON strings, ``checks`` as a list; enumerations and fault fields checked."""
        for name in DICT_FIELDS:
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
        if self.packing not in PACKING_MODES:
            raise ConfigError(f"packing must be one of {', '.join(PACKING_MODES)}, got {self.packing!r}.")
        if self.nonfinite not in NONFINITE_MODES:
            raise ConfigError(f"nonfinite must be stop or skip, got {self.nonfinite!r}.")
        steps = self.max_skipped_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"max_skipped_steps must be an integer >= 1, got {steps!r}.")

    def options(self, name: str) -> dict[str, Any]:
        """A dict field (one of :data:`DICT_FIELDS`) as a mapping, empty when unset (after :meth:`normalise`)."""
        value = getattr(self, name)
        if not (value is None or isinstance(value, dict)):
            raise ConfigError(f"{name} must be a mapping, got {type(value).__name__} {value!r}.")
        return dict(value or {})

    def check(self) -> None:
        """Every name against its registry (unknown: the registered names and the closest), and the check settings."""
        from .evaluation.runner import validate_check_params
        from .plugins import adapters, checks, judges, reference_strategies

        reference_strategies()[self.reference]
        adapters()[self.adapter]
        registered_checks = checks()
        for name in self.checks:
            registered_checks[name]
        if self.judge is not None:
            judges()[self.judge]
        stray = set(self.options("check_params")) - set(self.checks)
        if stray:
            raise ConfigError(f"check_params names {sorted(stray)}, which are not in checks {self.checks}.")
        if self.judge_params and self.judge is None:
            raise ConfigError("judge_params is set but judge is not: name the judge, e.g. judge: function.")
        validate_check_params(self.checks, self.options("check_params"), self.judge)

    def resolve_loss_mix(self, request: LossRequest) -> LossMix:
        """The run's resolved, validated loss mix (``.fresh()`` per trainer).

        Resolved once per request and loss settings (a host config's fields may change after it was built,
        and must count: then the request differs and the mix is resolved again).
        """
        inputs = repr((request, self.loss_params, self.reference, self.allow_negative_loss_weights))
        cached = self.__dict__.get("_loss_mix")
        if cached is not None and cached[0] == inputs:
            return cached[1]
        mix = LossMix.resolve(
            request.types,
            request.weights,
            self.options("loss_params"),
            request.explicit,
            defaults=request.defaults,
            reference_available=self.reference != "none",
            use_weighting=request.use_weighting,
            allow_negative_weights=self.allow_negative_loss_weights,
        )
        self.__dict__["_loss_mix"] = (inputs, mix)
        return mix

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_loss_mix", None)  # may hold plugin functions that do not pickle (training_args.bin)
        return state

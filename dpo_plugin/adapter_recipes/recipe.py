"""The adapter-recipe contract, full fine-tuning (``none``), TRL ModelConfig's peft options, and saving.

A recipe has an optional pre-load part, run before the model loads (QLoRA's quantization and its
CUDA check), and a peft-config part built for the loaded model. ``changes_base_weights`` tells the
trainer whether the recipe's initialisation rewrites the base weights (PiSSA, OLoRA): then "the
policy with its adapters disabled" is no longer the initial model, so the reference must be a copy.
"""

from __future__ import annotations

import copy
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigError

if TYPE_CHECKING:
    from peft import PeftConfig


@dataclass(frozen=True)
class Param:
    """One ``adapter_params`` entry: its default, and ``parse`` returning the value to use or raising ``ValueError``.

    ``expected`` says what a valid value is, for the error message.
    """

    default: Any
    parse: Callable[[Any], Any]
    expected: str


class AdapterRecipe(ABC):
    """Base of adapter recipes: the ``adapter_params`` it accepts, a pre-load step and a peft config."""

    #: True when the recipe's initialisation rewrites the base weights (the trainer then refuses the
    #: ``adapter`` reference strategy and uses a frozen copy).
    changes_base_weights: ClassVar[bool] = False
    #: name → :class:`Param` of every ``adapter_params`` entry the recipe accepts.
    params: ClassVar[Mapping[str, Param]] = {}

    def resolve_params(self, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """``params`` over the defaults, each parsed; unknown names and invalid values are :class:`ConfigError`."""
        params = dict(params or {})
        who = type(self).__name__
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            accepted = ", ".join(f"{name} (default {p.default!r})" for name, p in self.params.items())
            raise ConfigError(
                f"adapter_params {unknown} are not options of {who}; "
                + (f"accepted: {accepted}." if accepted else f"{who} takes no adapter_params.")
            )
        resolved = {}
        for name, param in self.params.items():
            value = params.get(name, param.default)
            try:
                resolved[name] = param.parse(value)
            except (TypeError, ValueError):
                raise ConfigError(f"adapter_params.{name} of {who} must be {param.expected}; got {value!r}.") from None
        return resolved

    def pre_load(self, params: Mapping[str, Any], model_init_kwargs: dict[str, Any]) -> dict[str, Any]:
        """Check ``params`` and return the ``from_pretrained`` kwargs to load the model with (here: unchanged)."""
        self.resolve_params(params)
        return dict(model_init_kwargs)

    @abstractmethod
    def peft_config(self, model: Any, params: Mapping[str, Any]) -> PeftConfig | None:
        """The peft config to wrap ``model`` with (None: train the model itself)."""


class FullFineTuning(AdapterRecipe):
    """Full fine-tuning: no adapter, every weight of the model trains."""

    def peft_config(self, model: Any, params: Mapping[str, Any]) -> None:
        """No peft config: the model itself trains (``params`` must be empty)."""
        self.resolve_params(params)


# ModelConfig's loading options that no recipe implements, with the value that means "not used".
_UNSUPPORTED_MODEL_CONFIG = {"load_in_8bit": False, "lora_target_parameters": None, "lora_task_type": "CAUSAL_LM"}
# ModelConfig's flags that each select one recipe; at most one may be set.
_RECIPE_FLAGS = {"load_in_4bit": "qlora", "use_dora": "dora", "use_rslora": "rslora"}


#: ModelConfig's LoRA fields and the adapter_params key each becomes (the first three are copied as they are).
MODEL_CONFIG_ADAPTER_KEYS = {
    "lora_r": "r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "lora_target_modules": "target_modules",
    "lora_modules_to_save": "modules_to_save",
}


def adapter_from_model_config(model_args: Any) -> tuple[str, dict[str, Any]] | None:
    """TRL ModelConfig's ``use_peft`` options as an adapter recipe name and its ``adapter_params``.

    ``use_peft`` with ``load_in_4bit`` → qlora, ``use_dora`` → dora, ``use_rslora`` → rslora, else
    lora; ``lora_r``/``lora_alpha``/``lora_dropout``/``lora_target_modules``/``lora_modules_to_save``
    → r/lora_alpha/lora_dropout/target_modules/modules_to_save. None when ``use_peft`` is off.
    Without ``lora_target_modules`` the recipe's default (all linear layers but the output layer)
    applies, where TRL would leave peft's per-architecture default (e.g. q_proj, v_proj for Llama).
    Options no recipe implements (8-bit loading, target parameters, a task type other than causal
    LM, fp4) and two recipe flags at once are a :class:`ConfigError`, never dropped silently.
    """
    if not model_args.use_peft:
        return None
    for option, unused in _UNSUPPORTED_MODEL_CONFIG.items():
        if getattr(model_args, option) != unused:
            raise ConfigError(
                f"ModelConfig {option}={getattr(model_args, option)!r} has no adapter recipe; remove it, or pick "
                "an `adapter:` that fits (`dpo-plugin plugins` lists them)."
            )
    flags = [flag for flag in _RECIPE_FLAGS if getattr(model_args, flag)]
    if len(flags) > 1:
        raise ConfigError(f"ModelConfig sets {' and '.join(flags)}; no adapter recipe combines them, keep one.")
    if model_args.load_in_4bit and model_args.bnb_4bit_quant_type != "nf4":
        quant_type = model_args.bnb_4bit_quant_type
        raise ConfigError(f"ModelConfig bnb_4bit_quant_type={quant_type!r}: adapter qlora quantizes to nf4 only.")
    params: dict[str, Any] = {
        key: getattr(model_args, field) for field, key in list(MODEL_CONFIG_ADAPTER_KEYS.items())[:3]
    }
    targets = model_args.lora_target_modules
    if targets:
        # ModelConfig turns a one-element list into its element; a plain module name is meant as a list entry.
        plain_name = isinstance(targets, str) and targets.lower() != "all-linear" and re.fullmatch(r"[\w.]+", targets)
        params["target_modules"] = [targets] if plain_name else targets if isinstance(targets, str) else list(targets)
    if model_args.lora_modules_to_save:
        params["modules_to_save"] = list(model_args.lora_modules_to_save)
    return (_RECIPE_FLAGS[flags[0]] if flags else "lora"), params


def save_initial_adapter(model: Any, directory: str | Path) -> Path:
    """Save a PiSSA/OLoRA adapter as initialised, for :func:`save_converted_adapter` after training.

    peft's documented way: the initial adapter is saved with ``init_lora_weights=True`` (so loading
    it does not re-run the SVD/QR) and later passed as ``path_initial_model_for_weight_conversion``.
    """
    config = model.peft_config[model.active_adapter]
    init = config.init_lora_weights
    config.init_lora_weights = True
    try:
        model.save_pretrained(directory)
    finally:
        config.init_lora_weights = init
    return Path(directory)


def save_converted_adapter(model: Any, output_dir: str | Path, initial_dir: str | Path) -> Path:
    """Save a trained PiSSA/OLoRA adapter converted to a plain LoRA on the original (unmodified) base weights.

    peft's conversion: ΔW = B·A − B₀·A₀ (trained minus initial adapter) written as one LoRA of rank 2r,
    so it loads on the original model like any LoRA adapter.
    """
    model.save_pretrained(output_dir, path_initial_model_for_weight_conversion=str(initial_dir))
    return Path(output_dir)


def merge_and_save(model: Any, output_dir: str | Path, processing_class: Any = None) -> Path:
    """Merge a PEFT model's active adapters into a copy of its base weights; save the plain model in ``output_dir``.

    With ``processing_class`` (the tokenizer, its chat template included) saved beside it, the folder
    is a complete model that loads and generates on its own.

    peft's ``merge_and_unload`` writes W + (α/r)·B·A (DoRA: its magnitude-rescaled weight) into each
    adapted layer; it runs on a deep copy, so the trained PeftModel stays usable. For PiSSA/OLoRA the
    base already holds the residual W − (α/r)·B₀·A₀, so the merge gives the trained model itself: the
    same weights as the converted adapter (:func:`save_converted_adapter`) merged into the original base.
    """
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        raise ConfigError(f"merge_and_save needs a PEFT model; a {type(model).__name__} has no adapter to merge.")
    merged = copy.deepcopy(model).merge_and_unload(safe_merge=True)
    output_dir = Path(output_dir)
    merged.save_pretrained(output_dir)
    if processing_class is not None:
        processing_class.save_pretrained(output_dir)
    return output_dir

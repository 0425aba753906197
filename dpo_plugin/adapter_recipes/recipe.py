"""The adapter-recipe contract, the LoRA-family recipes, and TRL ModelConfig's peft options."""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

logger = logging.getLogger(__name__)

LORA_PARAMS: dict[str, Any] = {
    "r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "target_modules": "all-linear",
    "modules_to_save": None,
    "bias": "none",
}


@dataclass(frozen=True)
class NoAdapter:
    """Full fine-tuning: no adapter."""

    changes_base_weights: bool = False

    def pre_load(self, params: Mapping[str, Any], model_init_kwargs: dict[str, Any]) -> dict[str, Any]:
        if params:
            raise ConfigError(f"adapter: none takes no adapter_params, got {sorted(params)}.")
        return model_init_kwargs

    def peft_config(self, model: Any, params: Mapping[str, Any]) -> None:
        self.pre_load(params, {})
        return None


@dataclass(frozen=True)
class LoraRecipe:
    """A LoRA-family recipe: LoRA plus the peft options that make it DoRA, rsLoRA, PiSSA or OLoRA.

    ``adapter_params``: r (16), lora_alpha (32), lora_dropout (0.05), target_modules ("all-linear",
    a list of module names, or a regex), modules_to_save, bias ("none").
    """

    peft_options: Mapping[str, Any] = field(default_factory=dict)
    changes_base_weights: bool = False

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` merged over the defaults, type- and range-checked."""
        unknown = sorted(set(params) - set(LORA_PARAMS))
        if unknown:
            raise ConfigError(f"adapter_params {unknown} are not LoRA options; accepted: {', '.join(LORA_PARAMS)}.")
        values = {**LORA_PARAMS, **params}
        if not isinstance(values["r"], int) or isinstance(values["r"], bool) or values["r"] <= 0:
            raise ConfigError(f"adapter_params.r must be a positive integer, got {values['r']!r}.")
        if not isinstance(values["lora_alpha"], (int, float)) or values["lora_alpha"] <= 0:
            raise ConfigError(f"adapter_params.lora_alpha must be a positive number, got {values['lora_alpha']!r}.")
        if not isinstance(values["lora_dropout"], (int, float)) or not 0 <= values["lora_dropout"] < 1:
            raise ConfigError(f"adapter_params.lora_dropout must lie in [0, 1), got {values['lora_dropout']!r}.")
        if values["bias"] not in ("none", "all", "lora_only"):
            raise ConfigError(f"adapter_params.bias must be none, all or lora_only, got {values['bias']!r}.")
        targets = values["target_modules"]
        if not (isinstance(targets, str) or (isinstance(targets, list) and all(isinstance(t, str) for t in targets))):
            raise ConfigError(f"adapter_params.target_modules must be 'all-linear', a regex or a list of names, got {targets!r}.")
        return values

    def pre_load(self, params: Mapping[str, Any], model_init_kwargs: dict[str, Any]) -> dict[str, Any]:
        self.validate(params)
        return model_init_kwargs

    def peft_config(self, model: Any, params: Mapping[str, Any]) -> Any:
        from peft import LoraConfig

        values = self.validate(params)
        values["target_modules"] = resolve_target_modules(model, values["target_modules"])
        return LoraConfig(task_type="CAUSAL_LM", **values, **self.peft_options)


def linear_module_names(model: Any) -> list[str]:
    """Full names of the model's ``nn.Linear`` modules (quantized linears included)."""
    import torch

    output = model.get_output_embeddings()
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt")
        if module is not output
    ]


def resolve_target_modules(model: Any, targets: str | list[str]) -> str | list[str]:
    """Check that the targets match linear layers of ``model`` (never the LM head) and return them for peft.

    As peft matches them: a list entry matches a module whose name is it or ends with ``.<entry>``;
    a string other than "all-linear" is a regex matched against the full module names.
    """
    head = {name for name, module in model.named_modules() if module is model.get_output_embeddings()}
    names = linear_module_names(model)
    layer_names = ", ".join(sorted({n.rsplit(".", 1)[-1] for n in names}))
    if targets == "all-linear":
        return targets

    def hits(target: str, candidates: Any) -> bool:
        if isinstance(targets, str):
            return any(re.fullmatch(target, n) for n in candidates)
        return any(n == target or n.endswith("." + target) for n in candidates)

    wanted = [targets] if isinstance(targets, str) else targets
    if any(hits(t, head) for t in wanted):
        raise ConfigError(
            "target_modules include the LM head, which TRL's fused log-prob path reads as lm_head.weight directly, so "
            "an adapter there would never train; remove it (use modules_to_save to train the head fully)."
        )
    missing = [t for t in wanted if not hits(t, names)]
    if missing:
        raise ConfigError(
            f"target_modules {missing} match no linear layer of {type(model).__name__}; its linear layers are named: "
            f"{layer_names}."
        )
    return targets


def adapter_from_model_config(model_args: Any) -> tuple[str, dict[str, Any]] | None:
    """TRL ModelConfig's use_peft / lora_* / use_dora / use_rslora / load_in_4bit as a recipe name and params."""
    if not getattr(model_args, "use_peft", False):
        return None
    params: dict[str, Any] = {
        "r": model_args.lora_r,
        "lora_alpha": model_args.lora_alpha,
        "lora_dropout": model_args.lora_dropout,
    }
    if model_args.lora_target_modules:
        targets = model_args.lora_target_modules
        params["target_modules"] = targets if isinstance(targets, str) else list(targets)
    if model_args.lora_modules_to_save:
        params["modules_to_save"] = list(model_args.lora_modules_to_save)
    if getattr(model_args, "load_in_4bit", False):
        name = "qlora"
    elif getattr(model_args, "use_dora", False):
        name = "dora"
    elif getattr(model_args, "use_rslora", False):
        name = "rslora"
    else:
        name = "lora"
    return name, params


def save_initial_adapter(model: Any, directory: str | Path) -> Path:
    """Save a PiSSA/OLoRA adapter as initialised, so the trained one can be saved relative to the original base.

    peft's documented way: the initial adapter is saved with ``init_lora_weights=True`` (so loading it
    does not re-run the SVD/QR), and later passed as ``path_initial_model_for_weight_conversion``.
    """
    config = model.peft_config["default"]
    init = config.init_lora_weights
    config.init_lora_weights = True
    try:
        model.save_pretrained(directory)
    finally:
        config.init_lora_weights = init
    return Path(directory)


def save_converted_adapter(model: Any, output_dir: str | Path, initial_dir: str | Path) -> None:
    """Save a trained PiSSA/OLoRA adapter converted to a plain LoRA on the original (unmodified) base weights."""
    model.save_pretrained(output_dir, path_initial_model_for_weight_conversion=str(initial_dir))


def merge_and_save(model: Any, output_dir: str | Path) -> Path:
    """Merge a PEFT model's adapters into a copy of its weights and save the plain model to ``output_dir``.

    The copy keeps the trained PeftModel usable. For PiSSA/OLoRA, whose initialisation rewrote the
    base weights, merging into those (residual) weights gives the trained model itself.
    """
    merged = copy.deepcopy(model).merge_and_unload()
    merged.__dict__.pop("forward", None)  # TRL's fused-head patch does not belong in a saved model
    output_dir = Path(output_dir)
    merged.save_pretrained(output_dir)
    return output_dir

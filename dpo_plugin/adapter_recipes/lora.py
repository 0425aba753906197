"""The LoRA family: one peft ``LoraConfig`` builder; LoRA, DoRA, rsLoRA, PiSSA and OLoRA differ only in peft options.

Every recipe here takes the same ``adapter_params`` (:data:`LORA_PARAMS`). ``target_modules`` is
"all-linear" (peft's own resolution: every linear layer but the output layer), a list of module
names (a name matches a module called that or ending in ``.<name>``) or a regex matched against
the full module names, as peft matches them. Targets are checked against the model first: an entry
matching no module is an error listing the model's linear layers, and the LM head is refused (TRL
computes log-probs from ``lm_head.weight`` directly, so an adapter there would never train).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigError
from .recipe import AdapterRecipe, Param

if TYPE_CHECKING:
    from peft import LoraConfig

ALL_LINEAR = "all-linear"


def _value(kind: type | tuple[type, ...], condition: Callable[[Any], bool]) -> Callable[[Any], Any]:
    """A parser accepting a value of ``kind`` (never a bool) that satisfies ``condition``."""

    def parse(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, kind) or not condition(value):
            raise ValueError(value)
        return value

    return parse


def _names(value: Any) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(value)
    return list(value)


LORA_PARAMS: dict[str, Param] = {
    "r": Param(16, _value(int, lambda v: v > 0), "a positive integer (the adapter rank)"),
    "lora_alpha": Param(32, _value((int, float), lambda v: v > 0), "a positive number"),
    "lora_dropout": Param(0.05, _value((int, float), lambda v: 0 <= v < 1), "a number in [0, 1)"),
    "target_modules": Param(
        ALL_LINEAR,
        lambda v: v if isinstance(v, str) and v else _names(v),
        "'all-linear', a regex over the full module names, or a list of module names",
    ),
    "modules_to_save": Param(None, lambda v: None if v is None else _names(v), "null or a list of module names"),
    "bias": Param("none", _value(str, lambda v: v in ("none", "all", "lora_only")), "one of none, all, lora_only"),
}


class LoRA(AdapterRecipe):
    """LoRA: a trained low-rank update s·B·A added to each frozen target weight (Hu et al. 2021, arXiv:2106.09685).

    W' = W + s·B·A with B (out × r) starting at zero, A (r × in), s = lora_alpha / r.
    """

    params = LORA_PARAMS
    #: the peft ``LoraConfig`` options that make this member of the family
    peft_options: ClassVar[Mapping[str, Any]] = {}

    def peft_config(self, model: Any, params: Mapping[str, Any]) -> LoraConfig:
        """A ``LoraConfig`` for ``model`` from ``params`` and the recipe's peft options, targets checked first."""
        from peft import LoraConfig

        values = self.resolve_params(params)
        check_target_modules(model, values["target_modules"])
        check_modules_to_save(model, values["modules_to_save"])
        return LoraConfig(task_type="CAUSAL_LM", **values, **self.peft_options)


class DoRA(LoRA):
    """DoRA: LoRA's direction times a trained magnitude per output feature (Liu et al. 2024, arXiv:2402.09353).

    W' = m ⊙ (W + s·B·A) / ‖W + s·B·A‖, the norm taken per output feature, m starting at ‖W‖.
    """

    peft_options: ClassVar[Mapping[str, Any]] = {"use_dora": True}


class RsLoRA(LoRA):
    """rsLoRA: LoRA scaled by s = lora_alpha / √r, stable across ranks (Kalajdzievski 2023, arXiv:2312.03732)."""

    peft_options: ClassVar[Mapping[str, Any]] = {"use_rslora": True}


class PiSSA(LoRA):
    """PiSSA: the adapter starts as W's top-r singular part, the base as the rest (Meng et al. 2024, arXiv:2404.02948).

    W = U·S·Vᵀ; s·B·A starts as U_r·S_r·V_rᵀ and the base weight becomes W − U_r·S_r·V_rᵀ.
    """

    changes_base_weights = True
    peft_options: ClassVar[Mapping[str, Any]] = {"init_lora_weights": "pissa"}


class OLoRA(LoRA):
    """OLoRA: the adapter starts as W's first r QR factors, the base as the rest (Büyükakyüz 2024, arXiv:2406.01775).

    W = Q·R; B starts as Q[:, :r], A as R[:r] and the base weight becomes W − s·B·A.
    """

    changes_base_weights = True
    peft_options: ClassVar[Mapping[str, Any]] = {"init_lora_weights": "olora"}


def _output_layer_name(model: Any) -> str | None:
    head = model.get_output_embeddings()
    return next((name for name, module in model.named_modules() if module is head), None)


def linear_layer_names(model: Any) -> list[str]:
    """Full names of ``model``'s linear layers (``nn.Linear``, GPT-2's ``Conv1D``), the output layer excluded."""
    import torch
    from transformers.pytorch_utils import Conv1D

    head = _output_layer_name(model)
    return [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D)) and n != head]


def check_target_modules(model: Any, targets: str | list[str]) -> None:
    """Check that each entry of ``targets`` matches a module of ``model`` (as peft matches) and none is the LM head."""
    if isinstance(targets, str) and targets.lower() == ALL_LINEAR:
        return  # peft resolves it to every linear layer but the output layer
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    configs = (
        {targets: LoraConfig(target_modules=targets)}
        if isinstance(targets, str)
        else {entry: LoraConfig(target_modules=[entry]) for entry in targets}
    )
    names = [name for name, _ in model.named_modules() if name]
    matches = {entry: [n for n in names if check_target_module_exists(config, n)] for entry, config in configs.items()}
    head = _output_layer_name(model)
    if any(head in matched for matched in matches.values()):
        raise ConfigError(
            f"target_modules {targets!r} include the LM head {head!r}: TRL computes log-probs from its weight "
            "directly, so an adapter there would never train. Remove it (to train the head fully, list it in "
            "modules_to_save)."
        )
    unmatched = [entry for entry, matched in matches.items() if not matched]
    if unmatched:
        linear = linear_layer_names(model)
        short = dict.fromkeys(n.rsplit(".", 1)[-1] for n in linear)
        example = f" (full names like {linear[0]!r})" if linear else ""
        raise ConfigError(
            f"target_modules {unmatched} match no module of {type(model).__name__}. Its linear layers are "
            f"{', '.join(short) or 'none'}{example}: list names, write a regex over the full names, or use "
            "'all-linear'."
        )


def check_modules_to_save(model: Any, modules: list[str] | None) -> None:
    """Check that each ``modules_to_save`` entry names a module of ``model`` (peft matches names by their ending)."""
    names = [name for name, _ in model.named_modules() if name]
    unmatched = [entry for entry in modules or () if not any(n.endswith(entry) for n in names)]
    if unmatched:
        leaves = dict.fromkeys(n.rsplit(".", 1)[-1] for n, m in model.named_modules() if n and not any(m.children()))
        raise ConfigError(
            f"modules_to_save {unmatched} match no module of {type(model).__name__}; its modules are named "
            f"{', '.join(leaves)}."
        )

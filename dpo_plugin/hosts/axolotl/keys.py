"""The plugin keys an Axolotl YAML takes, and the plugin settings read from an Axolotl config.

The same names and meaning as in the TRL YAML (:class:`~dpo_plugin.settings.PluginSettings`), except the
adapter keys: ``adapter`` is Axolotl's own key (``lora``, ``qlora`` … with its ``lora_*`` keys), so the
adapter and its merging stay Axolotl's. Axolotl's own DPO keys say the rest: ``dpo_loss_type`` and
``dpo_loss_weights`` (any registered loss), ``rl_beta``, ``dpo_label_smoothing``, ``dpo_use_weighting``,
``dpo_ld_alpha``, ``precompute_ref_log_probs`` (``reference: precomputed``), ``dpo_padding_free``
(``packing: padding_free``).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field, create_model

from ...settings import LossRequest, PluginSettings
from ..trl.config import map_trl_fields
from ..trl.internals import TRL_DEFAULTS

#: PluginSettings fields that Axolotl owns under the same name or does itself.
AXOLOTL_OWNS = ("adapter", "adapter_params", "merge_adapter")
#: The plugin's keys in an Axolotl YAML.
PLUGIN_KEYS = tuple(f.name for f in dataclasses.fields(PluginSettings) if f.name not in AXOLOTL_OWNS)
#: Axolotl's keys that map onto TRL's ``DPOConfig`` fields a plugin field also says.
AXOLOTL_TRL_FIELDS = {"dpo_padding_free": "padding_free", "precompute_ref_log_probs": "precompute_ref_log_probs"}


def _input_model() -> type[BaseModel]:
    """A pydantic model of :data:`PLUGIN_KEYS` (all optional: an unset key takes the plugin's default; a list
    field takes one string too, as in the TRL YAML)."""
    hints = typing.get_type_hints(PluginSettings)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(PluginSettings):
        if f.name in PLUGIN_KEYS:
            hint = hints[f.name] | str if typing.get_origin(hints[f.name]) is list else hints[f.name]
            fields[f.name] = (hint | None, Field(default=None, description=f.metadata.get("help")))
    model: type[BaseModel] = create_model("DPOPluginArgs", **fields)
    return model


#: Merged into Axolotl's config schema (``DPOPlugin.get_input_args``).
DPOPluginArgs = _input_model()


#: Axolotl's keys → the ``DPOConfig`` fields its builder sets from them (loss parameters).
AXOLOTL_LOSS_FIELDS = {
    "rl_beta": "beta",
    "dpo_label_smoothing": "label_smoothing",
    "dpo_use_weighting": "use_weighting",
    "dpo_ld_alpha": "ld_alpha",
}


def loss_request(cfg: Mapping[str, Any]) -> LossRequest:
    """The loss an Axolotl config asks for: ``dpo_loss_type`` (``rl: ipo`` meaning ``[ipo]``), ``dpo_loss_weights``,
    and the loss fields the user set (``rl_beta`` or ``trl.beta``, ``dpo_label_smoothing`` …) as set explicitly."""
    rl = str(getattr(cfg.get("rl"), "value", cfg.get("rl")) or "")
    types = cfg.get("dpo_loss_type") or (["ipo"] if rl == "ipo" else ["sigmoid"])
    weights = cfg.get("dpo_loss_weights")
    explicit = {field: cfg[key] for key, field in AXOLOTL_LOSS_FIELDS.items() if cfg.get(key) is not None}
    trl_beta = (cfg.get("trl") or {}).get("beta")
    if trl_beta is not None:
        explicit["beta"] = trl_beta
    beta = float(explicit.get("beta", TRL_DEFAULTS["beta"]))
    use_weighting = bool(explicit.get("use_weighting", False))
    return LossRequest(tuple(types), tuple(weights) if weights else None, explicit, TRL_DEFAULTS, beta, use_weighting)


def settings_from(cfg: Mapping[str, Any]) -> PluginSettings:
    """The plugin settings of an Axolotl config (raw or validated), its TRL-field equivalents mapped."""
    settings = PluginSettings(**{key: cfg[key] for key in PLUGIN_KEYS if cfg.get(key) is not None})
    trl_fields = {trl_name: cfg.get(key) for key, trl_name in AXOLOTL_TRL_FIELDS.items()}
    map_trl_fields(settings, trl_fields, explicit=())
    return settings

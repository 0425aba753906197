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

from ...settings import PluginSettings
from ..trl.config import map_trl_fields

#: PluginSettings fields that Axolotl owns under the same name or does itself.
AXOLOTL_OWNS = ("adapter", "adapter_params", "merge_adapter")
#: The plugin's keys in an Axolotl YAML.
PLUGIN_KEYS = tuple(f.name for f in dataclasses.fields(PluginSettings) if f.name not in AXOLOTL_OWNS)
#: Axolotl's keys that map onto TRL's ``DPOConfig`` fields a plugin field also says.
AXOLOTL_TRL_FIELDS = {"dpo_padding_free": "padding_free", "precompute_ref_log_probs": "precompute_ref_log_probs"}


def _input_model() -> type[BaseModel]:
    """A pydantic model of :data:`PLUGIN_KEYS` (all optional: an unset key takes the plugin's default)."""
    hints = typing.get_type_hints(PluginSettings)
    fields: dict[str, Any] = {
        f.name: (hints[f.name] | None, Field(default=None, description=f.metadata.get("help")))
        for f in dataclasses.fields(PluginSettings)
        if f.name in PLUGIN_KEYS
    }
    model: type[BaseModel] = create_model("DPOPluginArgs", **fields)
    return model


#: Merged into Axolotl's config schema (``DPOPlugin.get_input_args``).
DPOPluginArgs = _input_model()


def settings_from(cfg: Mapping[str, Any]) -> PluginSettings:
    """The plugin settings of an Axolotl config (raw or validated), its TRL-field equivalents mapped."""
    settings = PluginSettings(**{key: cfg[key] for key in PLUGIN_KEYS if cfg.get(key) is not None})
    trl_fields = {trl_name: cfg.get(key) for key, trl_name in AXOLOTL_TRL_FIELDS.items()}
    map_trl_fields(settings, trl_fields, explicit=())
    return settings

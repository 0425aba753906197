"""The Axolotl plugin: ``plugins: [dpo_plugin.hosts.axolotl.DPOPlugin]`` makes an ``rl: dpo`` run a dpo-plugin run.

Axolotl calls :meth:`DPOPlugin.register` with the raw YAML before it validates it (and before any
model loads): the plugin checks what Axolotl alone would let through — ``rl`` outside the DPO family,
a ``trainer_cls`` of the user's, a misspelled plugin key (Axolotl drops undeclared keys silently), plugin
settings that are wrong, a TRL outside the supported range — and sets ``trainer_cls`` to the trainer that
runs a session (:class:`~.trainer.AxolotlDPOPluginTrainer`). Installed beside Axolotl, the package also
declares an ``axolotl.plugins`` entry point, so Axolotl loads the plugin in every run: there it only says
when a plugin key is given without the plugin in ``plugins:``.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, MutableMapping
from typing import Any

from axolotl.integrations.base import BasePlugin

from ...errors import ConfigError, DpoPluginError
from . import PLUGIN_PATH
from .host import AxolotlHost
from .keys import PLUGIN_KEYS, settings_from

logger = logging.getLogger(__name__)

TRAINER_PATH = "dpo_plugin.hosts.axolotl.trainer.AxolotlDPOPluginTrainer"
#: ``rl`` values whose trainer is TRL's DPOTrainer (``ipo`` is Axolotl's older spelling of ``dpo_loss_type: [ipo]``).
SERVED_RL = ("dpo", "ipo")
#: The names Axolotl may know the plugin by (``module:Class`` is normalised to ``module.Class``).
NAMES = {PLUGIN_PATH, "dpo_plugin.hosts.axolotl.plugin.DPOPlugin"}


def _named(plugins: Iterable[str] | None) -> bool:
    return any(str(name).replace(":", ".") in NAMES for name in plugins or ())


def _schema_keys() -> set[str]:
    """Every key Axolotl's merged config schema takes (its own, every loaded plugin's, and their aliases)."""
    from axolotl.integrations.config import merge_input_args

    _, schema = merge_input_args()
    keys = set(schema.model_fields)
    keys |= {f.alias for f in schema.model_fields.values() if f.alias}
    return keys


def check_unknown_keys(cfg: MutableMapping[str, Any], known: set[str]) -> None:
    """A key Axolotl does not know whose closest known key is a plugin key: a ConfigError naming it."""
    for key in sorted(set(cfg) - known):
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
        if close and close[0] in PLUGIN_KEYS:
            raise ConfigError(
                f"Unknown key {key!r} in the Axolotl config. Did you mean {close[0]!r}? (Axolotl drops unknown keys "
                "without a word.)"
            )
        if close:
            logger.warning("Axolotl will ignore the unknown key %r; did you mean %r?", key, close[0])


def check_raw_config(cfg: MutableMapping[str, Any]) -> None:
    """What Axolotl alone lets through, checked before any model loads (see the module docstring)."""
    rl = str(getattr(cfg.get("rl"), "value", cfg.get("rl")) or "")
    if rl not in SERVED_RL:
        raise ConfigError(
            f"{PLUGIN_PATH} serves rl: dpo (or ipo), but this config has rl: {rl or 'unset'}. Set rl: dpo, or remove "
            "the plugin from plugins:."
        )
    trainer_cls = cfg.get("trainer_cls")
    if trainer_cls and trainer_cls != TRAINER_PATH:
        raise ConfigError(
            f"trainer_cls: {trainer_cls} is set, but {PLUGIN_PATH} trains with {TRAINER_PATH}; remove trainer_cls "
            "(or the plugin)."
        )
    check_unknown_keys(cfg, _schema_keys())
    AxolotlHost().check_versions()
    settings_from(cfg)  # the plugin settings, checked against the registries


class DPOPlugin(BasePlugin):
    """dpo-plugin in Axolotl: every registered loss, reference strategy, packing and the post-training checks."""

    def get_input_args(self) -> str:
        return "dpo_plugin.hosts.axolotl.keys.DPOPluginArgs"

    def register(self, cfg: MutableMapping[str, Any]) -> None:
        """The raw config checked, and ``trainer_cls`` set to the trainer that runs a session (see the module)."""
        try:
            if not _named(cfg.get("plugins")):
                given = sorted(key for key in PLUGIN_KEYS if cfg.get(key) is not None)
                if given:
                    raise ConfigError(
                        f"{', '.join(given)} {'is a dpo-plugin key' if len(given) == 1 else 'are dpo-plugin keys'}, "
                        f"but plugins: does not name {PLUGIN_PATH}: add it under plugins: (or remove the keys)."
                    )
                return
            check_raw_config(cfg)
        except DpoPluginError as error:
            raise SystemExit(f"error: {error}") from None
        cfg["trainer_cls"] = TRAINER_PATH
        show_our_logs()


def show_our_logs() -> None:
    """This package's INFO lines (the reference and layout chosen, the losses) on Axolotl's console.

    Axolotl's loggers for other libraries drop their records below WARNING (a filter on each logger made
    after Axolotl configured logging); this package's loggers made so far lose that filter and the
    ``dpo_plugin`` logger writes through Axolotl's own handlers. Called again once the trainer exists.
    """
    from axolotl.logging_config import AxolotlOrWarnErrorFilter

    for name, logger_ in list(logging.Logger.manager.loggerDict.items()):
        if name.split(".")[0] == "dpo_plugin" and isinstance(logger_, logging.Logger):
            for drop in [f for f in logger_.filters if isinstance(f, AxolotlOrWarnErrorFilter)]:
                logger_.removeFilter(drop)
    ours, axolotl = logging.getLogger("dpo_plugin"), logging.getLogger("axolotl")
    if axolotl.handlers and not ours.handlers:
        ours.setLevel(logging.INFO)
        for handler in axolotl.handlers:  # Axolotl's console handler filters; a twin of it without the filter
            if handler.filters and isinstance(handler, logging.StreamHandler):
                twin = logging.StreamHandler(handler.stream)
                twin.setFormatter(handler.formatter)
                handler = twin
            ours.addHandler(handler)
        ours.propagate = False

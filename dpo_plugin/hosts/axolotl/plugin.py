"""The Axolotl plugin: ``plugins: [dpo_plugin.hosts.axolotl.DPOPlugin]`` makes an ``rl: dpo`` run a dpo-plugin run.

Axolotl calls :meth:`DPOPlugin.register` with the raw YAML before it validates it, before it writes into
``output_dir`` and before any model loads: the plugin checks what Axolotl alone would let through — ``rl``
outside the DPO family, a ``trainer_cls`` of the user's, a misspelled plugin key (Axolotl drops undeclared
keys silently), plugin settings and losses that are wrong, a TRL outside the supported range, a file of the
user's in ``output_dir`` that the run would overwrite — and sets ``trainer_cls`` to the trainer that runs a
session (:class:`~.trainer.AxolotlDPOPluginTrainer`). Installed beside Axolotl, the package also declares an
``axolotl.plugins`` entry point, so Axolotl loads the plugin in every run: there it only warns when a plugin
key is given without the plugin in ``plugins:``.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import MutableMapping
from typing import Any

from axolotl.integrations.base import BasePlugin

from ...errors import ConfigError, DpoPluginError
from ...output_folder import check_output_dir, entries
from ...session import DPOSession
from . import PLUGIN_PATH, names_the_plugin
from .host import AxolotlHost, output_dir_of
from .keys import PLUGIN_KEYS, loss_request, settings_from

logger = logging.getLogger(__name__)

TRAINER_PATH = "dpo_plugin.hosts.axolotl.trainer.AxolotlDPOPluginTrainer"
#: ``rl`` values whose trainer is TRL's DPOTrainer (``ipo`` is Axolotl's older spelling of ``dpo_loss_type: [ipo]``).
SERVED_RL = ("dpo", "ipo")


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


def check_raw_config(cfg: MutableMapping[str, Any]) -> set[str]:
    """What Axolotl alone lets through, checked before it writes or loads anything (see the module docstring).

    Returns the entries ``output_dir`` holds now (the user's, and an earlier run's): whatever appears there from
    here on is the run's (Axolotl's debug log, the tokenizer and config it saves before training).
    """
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
    settings = settings_from(cfg)  # the plugin settings, checked against the registries
    settings.resolve_loss_mix(loss_request(cfg))  # the losses, their weights and parameters
    folder = output_dir_of(cfg)
    resuming = bool(cfg.get("resume_from_checkpoint"))
    check_output_dir(folder, resuming=resuming, reuse=settings.reuse_output_dir, strict=False)
    return entries(folder)


class DPOPlugin(BasePlugin):
    """dpo-plugin in Axolotl: every registered loss, reference strategy, packing and the post-training checks."""

    def __init__(self) -> None:
        super().__init__()
        #: ``output_dir``'s entries before Axolotl wrote into it (None until ``register`` ran for our run)
        self.entries_before: set[str] | None = None
        #: the run's session, once the trainer exists
        self.session: DPOSession | None = None

    def get_input_args(self) -> str:
        return "dpo_plugin.hosts.axolotl.keys.DPOPluginArgs"

    def register(self, cfg: MutableMapping[str, Any]) -> None:
        """The raw config checked, and ``trainer_cls`` set to the trainer that runs a session (see the module)."""
        if not names_the_plugin(cfg.get("plugins")):
            given = sorted(key for key in PLUGIN_KEYS if cfg.get(key) is not None)
            if given:
                logger.warning(
                    "%s: dpo-plugin keys, but plugins: does not name %s, so they do nothing; add it under plugins:.",
                    ", ".join(given),
                    PLUGIN_PATH,
                )
            return
        try:
            self.entries_before = check_raw_config(cfg)
        except DpoPluginError as error:
            raise SystemExit(f"error: {error}") from None
        cfg["trainer_cls"] = TRAINER_PATH
        show_our_logs()

    def post_train_unload(self, cfg: MutableMapping[str, Any]) -> None:
        """After Axolotl's final save (it bypasses the trainer's ``save_model``): the manifest lists what it wrote."""
        if self.session is not None:
            self.session.record_outputs()

    def on_config_validation_error(self, cfg: MutableMapping[str, Any]) -> None:
        """Axolotl refused the config: the trainer class ``register`` set is taken back."""
        if cfg.get("trainer_cls") == TRAINER_PATH:
            del cfg["trainer_cls"]


def show_our_logs() -> None:
    """This package's INFO lines (the reference and layout chosen, the losses) on Axolotl's console.

    Axolotl's loggers for other libraries drop their records below WARNING (a filter on each logger made
    after Axolotl configured logging); this package's loggers made so far lose that filter and the
    ``dpo_plugin`` logger writes through twins of Axolotl's own handlers, at ``AXOLOTL_LOG_LEVEL`` (INFO by
    default, as Axolotl's own lines). Called again once the trainer exists and when training starts.
    """
    from axolotl.logging_config import AxolotlOrWarnErrorFilter

    for name, logger_ in list(logging.Logger.manager.loggerDict.items()):
        if name.split(".")[0] == "dpo_plugin" and isinstance(logger_, logging.Logger):
            for drop in [f for f in logger_.filters if isinstance(f, AxolotlOrWarnErrorFilter)]:
                logger_.removeFilter(drop)
    ours, axolotl = logging.getLogger("dpo_plugin"), logging.getLogger("axolotl")
    if axolotl.handlers and not ours.handlers:
        ours.setLevel(os.environ.get("AXOLOTL_LOG_LEVEL", "INFO").upper())
        for handler in axolotl.handlers:  # Axolotl's console handler filters; a twin of it without the filter
            if handler.filters and isinstance(handler, logging.StreamHandler):
                twin = logging.StreamHandler(handler.stream)
                twin.setFormatter(handler.formatter)
                handler = twin
            ours.addHandler(handler)
        ours.propagate = False

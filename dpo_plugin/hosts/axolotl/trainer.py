"""Axolotl's DPO trainer running a :class:`~dpo_plugin.session.DPOSession`.

A subclass of Axolotl's ``AxolotlDPOTrainer``, so its optimizer, scheduler, RNG-loading and distributed
mixins stay, with the session's overrides of TRL's methods (:class:`~dpo_plugin.hosts.trl.internals.SessionHooks`)
in front. Axolotl builds it as it builds its own (``trainer_cls``): ``(model, model_ref, args=…,
train_dataset=…, processing_class=…, callbacks=…[, eval_dataset][, peft_config][, data_collator])``.
The plugin settings and the loss come from Axolotl's validated config. Axolotl loads the reference a
second time when training without an adapter: that copy is the run's initial copy (``RunFacts.initial_copy``),
used by the strategies that need one and never loaded a third time.
"""

from __future__ import annotations

import logging
from typing import Any

from axolotl.core.trainers.dpo.trainer import AxolotlDPOTrainer

from ...errors import DpoPluginError
from ...session import DPOSession
from ..trl.internals import SessionHooks, TrlBackend, trl_init_view
from ..trl.trainer import finish_run, plan_run
from .keys import loss_request, settings_from
from .plugin import DPOPlugin, show_our_logs

logger = logging.getLogger(__name__)


def axolotl_run() -> tuple[Any, DPOPlugin | None]:
    """The run's validated Axolotl config, and this package's plugin as Axolotl loaded it."""
    from axolotl.integrations.base import PluginManager

    manager = PluginManager.get_instance()
    plugin = next((p for p in manager.plugins.values() if isinstance(p, DPOPlugin)), None)
    return manager.cfg, plugin


class AxolotlDPOPluginTrainer(SessionHooks, AxolotlDPOTrainer):
    """Axolotl's DPO trainer; losses, reference, packing, guard and checks from the session."""

    def __init__(self, model: Any, ref_model: Any = None, *args: Any, **kwargs: Any):
        try:
            plan = self._plan(model, ref_model, kwargs)
        except DpoPluginError as error:
            raise SystemExit(f"error: {error}") from None
        if plan.peft_config is not None:
            kwargs["peft_config"] = plan.peft_config
        with trl_init_view(kwargs["args"], precompute=plan.precompute, loaded_here=False):
            super().__init__(plan.model, plan.ref_model, *args, **kwargs)
        finish_run(self, plan)
        show_our_logs()

    def _plan(self, model: Any, ref_model: Any, kwargs: dict[str, Any]) -> Any:
        """The session, from Axolotl's config, and the run prepared before TRL's ``__init__``."""
        show_our_logs()
        cfg, plugin = axolotl_run()
        training_args = kwargs["args"]
        self.session = DPOSession(
            settings_from(cfg),
            loss_request(cfg),
            TrlBackend(),
            output_dir=training_args.output_dir,
            entries_before=plugin.entries_before if plugin else None,
        )
        if plugin is not None:
            plugin.session = self.session
        return plan_run(
            self,
            training_args,
            model,
            (kwargs.get("train_dataset"), kwargs.get("eval_dataset")),
            peft_config=kwargs.get("peft_config"),
            data_collator=kwargs.get("data_collator"),
            processing_class=kwargs.get("processing_class"),
            compute_metrics=kwargs.get("compute_metrics"),
            initial_copy=ref_model,
        )

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """Training as under the TRL host; a stop of ours (divergence, a signal) exits with its code and message."""
        show_our_logs()
        try:
            return super().train(*args, **kwargs)
        except DpoPluginError as error:
            logger.error("%s", error)
            raise SystemExit(error.exit_code) from None

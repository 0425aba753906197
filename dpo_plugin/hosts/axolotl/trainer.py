"""Axolotl's DPO trainer running a :class:`~dpo_plugin.session.DPOSession`.

A subclass of Axolotl's ``AxolotlDPOTrainer``, so its optimizer, scheduler, RNG-loading and distributed
mixins stay, with the session's overrides of TRL's methods (:class:`~dpo_plugin.hosts.trl.internals.SessionHooks`)
in front. Axolotl builds it as it builds its own (``trainer_cls``): ``(model, model_ref, args=…,
train_dataset=…, processing_class=…, callbacks=…[, eval_dataset][, peft_config][, data_collator])``.
The plugin settings come from Axolotl's validated config. Axolotl loads the reference a second time
when training without an adapter: that copy is the run's initial copy (``RunFacts.initial_copy``), used
by the strategies that need one and never loaded a third time.
"""

from __future__ import annotations

import logging
from typing import Any

from axolotl.core.trainers.dpo.trainer import AxolotlDPOTrainer

from ...errors import DpoPluginError
from ...session import DPOSession
from ..trl.internals import TRL_DEFAULTS, SessionHooks, TrlBackend, loss_request, trl_init_view
from ..trl.trainer import finish_run, plan_run
from .keys import settings_from
from .plugin import show_our_logs

logger = logging.getLogger(__name__)


def axolotl_config() -> Any:
    """The run's validated Axolotl config (Axolotl's plugin manager holds it)."""
    from axolotl.integrations.base import PluginManager

    return PluginManager.get_instance().cfg


def changed_fields(args: Any) -> frozenset[str]:
    """The ``DPOConfig`` fields Axolotl set to something else than TRL's default (the user's settings, mapped)."""
    return frozenset(name for name, default in TRL_DEFAULTS.items() if getattr(args, name, default) != default)


class AxolotlDPOPluginTrainer(SessionHooks, AxolotlDPOTrainer):
    """Axolotl's DPO trainer; losses, reference, packing, guard and checks from the session."""

    def __init__(self, model: Any, ref_model: Any = None, *args: Any, **kwargs: Any):
        show_our_logs()
        training_args = kwargs["args"]
        settings = settings_from(axolotl_config())
        request = loss_request(training_args, changed_fields(training_args))
        self.session = DPOSession(settings, request, TrlBackend(), output_dir=training_args.output_dir)
        plan = plan_run(
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
        if plan.peft_config is not None:
            kwargs["peft_config"] = plan.peft_config
        with trl_init_view(training_args, precompute=plan.precompute, loaded_here=False):
            super().__init__(plan.model, plan.ref_model, *args, **kwargs)
        finish_run(self, plan)
        show_our_logs()

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """Training as under the TRL host; a stop of ours (divergence, a signal) exits with its code and message."""
        try:
            return super().train(*args, **kwargs)
        except DpoPluginError as error:
            logger.error("%s", error)
            raise SystemExit(error.exit_code) from None

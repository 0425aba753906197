"""What keeps a run safe while it trains: the divergence guard and preemption.

- :class:`StepGuard`: after each backward that ends an optimizer step, before the optimizer applies
  it, the loss and the gradient norm must be finite (decided together by every process).
  ``nonfinite: stop`` raises :class:`~dpo_plugin.faults.DivergenceError` at once; ``skip``
  drops the update (the gradients are cleared, so the optimizer leaves every weight as it is) and
  stops after ``max_skipped_steps`` in a row. Saving checks the weights first.
- :class:`PreemptionCallback`: SIGTERM or SIGINT (a spot instance, SLURM, Ctrl-C) lets the current
  step finish, saves a checkpoint and stops; the trainer then raises
  :class:`~dpo_plugin.faults.Preempted` saying how to resume.
"""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING, Any

import torch
from transformers import Trainer, TrainerCallback

from .checkpoints import last_checkpoint
from .faults import DivergenceError, divergence_message, likely_causes, nonfinite_tensors

if TYPE_CHECKING:
    from .loss_mix import LossMix
    from .settings import PluginSettings
    from .step_metrics import StepMetrics

logger = logging.getLogger(__name__)


class StepGuard:
    """Watches each optimizer step of a trainer for non-finite values (see the module docstring)."""

    def __init__(self, trainer: Trainer, settings: PluginSettings, loss_mix: LossMix, metrics: StepMetrics):
        self.trainer, self.settings, self.loss_mix, self.metrics = trainer, settings, loss_mix, metrics
        self.skipped_in_a_row = 0
        self.skipped = 0
        self.health: torch.Tensor | None = None  # per step: the finiteness of what the loss was made of
        # fp16's loss scaler skips overflowing steps itself (and lowers the scale): the guard leaves gradients to it
        self.scaled = trainer.accelerator.scaler is not None
        if trainer.is_deepspeed_enabled:
            logger.warning(
                "Under DeepSpeed the optimizer steps inside backward, before the divergence guard can look: a "
                "non-finite loss stops the run (nonfinite: %s) only after that step; DeepSpeed's own overflow "
                "handling applies to fp16. Non-finite weights are still never saved.",
                settings.nonfinite,
            )

    def watch_loss(self, pair: Any, outputs: list[Any]) -> None:
        """Record the finiteness of the step's log-probabilities and of each loss (on the device: no sync)."""
        parts = [pair.chosen, pair.rejected]
        parts += [pair.ref_chosen, pair.ref_rejected] if pair.has_reference else []
        parts += [out.losses for out in outputs]
        flags = [torch.isfinite(p.detach()).all() for p in parts]
        self.health = torch.stack(flags) if self.health is None else self.health & torch.stack(flags)

    def after_backward(self, loss: torch.Tensor, model: Any) -> None:
        """At an optimizer step: stop, or drop the update, when the loss or the gradients are not finite."""
        grads = [] if self.scaled else [p.grad for p in model.parameters() if p.grad is not None]
        norm = (
            torch.nn.utils.get_total_norm(grads, error_if_nonfinite=False)
            if grads
            else torch.zeros((), device=loss.device)
        )
        bad = ~(torch.isfinite(loss.detach()).all() & torch.isfinite(norm)).to(loss.device)
        if self.trainer.accelerator.num_processes > 1:
            bad = self.trainer.accelerator.reduce(bad.float(), reduction="sum") > 0
        if not bool(bad):
            self.skipped_in_a_row, self.health = 0, None
            self.metrics.step_done()
            return
        what = self._what(norm)
        self.health = None
        settings = self.settings
        if settings.nonfinite == "skip" and self.skipped_in_a_row < settings.max_skipped_steps:
            self.skipped_in_a_row += 1
            self.skipped += 1
            if not self.scaled:  # (the loss scaler skips a step whose gradients are not finite by itself)
                model.zero_grad(set_to_none=True)  # the optimizer skips every weight without a gradient
            self.metrics.drop_step()  # the step's non-finite metrics are not logged
            step, limit = self.trainer.state.global_step + 1, settings.max_skipped_steps
            logger.warning(
                "Step %d skipped (%s); %d skipped in a row (max_skipped_steps=%d).",
                step,
                what,
                self.skipped_in_a_row,
                limit,
            )
            return
        if settings.nonfinite == "skip":
            what += (
                f", for the {self.skipped_in_a_row + 1}th step in a row "
                f"(max_skipped_steps={settings.max_skipped_steps})"
            )
        self.fail(self.trainer.state.global_step + 1, what)

    def _what(self, norm: torch.Tensor) -> str:
        """What went non-finite first: the log-probabilities, a loss (and its plugin), or the gradients alone."""
        if self.health is not None:
            flags = self.health.tolist()
            mix = self.loss_mix
            names = [
                "the policy's log-probabilities of the chosen answers",
                "the policy's log-probabilities of the rejected answers",
            ]
            if len(flags) > 2 + len(mix.components):
                names += [
                    "the reference's log-probabilities of the chosen answers",
                    "the reference's of the rejected answers",
                ]
            names += [f"loss {c.name!r} (plugin {c.spec.plugin!r}) on finite log-probabilities" for c in mix.components]
            for name, finite in zip(names, flags):
                if not finite:
                    return f"{name} became non-finite"
        return f"the gradients became non-finite (gradient norm {norm.item():g}) while the loss was finite"

    def fail(self, step: int, what: str, *, saved: bool = False) -> None:
        args = self.trainer.args
        components = self.loss_mix.components
        plugin_losses = [
            f"{c.name} ({c.spec.plugin})" for c in components if not c.spec.plugin.startswith("dpo_plugin.")
        ]
        causes = likely_causes(
            learning_rate=args.learning_rate,
            fp16=args.fp16,
            plugin_losses=plugin_losses,
            plugin_first="(plugin " in what,
        )
        checkpoint = last_checkpoint(str(args.output_dir))
        raise DivergenceError(divergence_message(step, what, causes=causes, checkpoint=checkpoint, weights=saved))

    def check_weights(self, model: Any) -> None:
        """Before a save: the weights must all be finite."""
        bad = nonfinite_tensors(model.named_parameters())
        if bad:
            shown = ", ".join(bad[:3]) + (", …" if len(bad) > 3 else "")
            self.fail(self.trainer.state.global_step, f"{len(bad)} weight tensors are not finite ({shown})", saved=True)


class PreemptionCallback(TrainerCallback):
    """SIGTERM/SIGINT: finish the step, save a checkpoint, stop (every process agrees on the step)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, accelerator: Any):
        self.accelerator = accelerator
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, number: int, frame: Any) -> None:
        """Note the signal, nothing more: a handler that writes (a log line) can interrupt a write to the same
        stream and deadlock the process. The next step's end acts on it and says so."""
        self.received = signal.Signals(number).name
        for signum, handler in self._previous.items():  # a second signal acts at once
            signal.signal(signum, handler)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.received = None
        try:
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        except ValueError:  # not in the main thread: signals are not ours to take
            self._previous = {}

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        flag = torch.tensor(float(self.received is not None), device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            flag = self.accelerator.reduce(flag, reduction="sum")
        if flag.item() > 0:
            self.received = self.received or "a signal to another process"
            logger.warning("%s received: saving a checkpoint after this step, then stopping.", self.received)
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

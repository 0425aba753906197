"""What keeps a run safe while it trains: the divergence guard, preemption, and which checkpoint to resume from.

- :class:`StepGuard`: after each backward that ends an optimizer step, before the optimizer applies
  it, the loss and the gradient norm must be finite (decided together by every process).
  ``nonfinite: stop`` raises :class:`~dpo_plugin.faults.DivergenceError` at once; ``skip``
  drops the update (the gradients are cleared, so the optimizer leaves every weight as it is) and
  stops after ``max_skipped_steps`` in a row. Saving checks the weights first.
- :class:`PreemptionCallback`: SIGTERM or SIGINT (a spot instance, SLURM, Ctrl-C) lets the current
  step finish, saves a checkpoint and stops; the trainer then raises
  :class:`~dpo_plugin.faults.Preempted` saying how to resume.
- :func:`resume_checkpoint`: ``resume_from_checkpoint`` as a folder, with ``true`` meaning the
  newest intact checkpoint of the output folder; a checkpoint cut short while saving is named and
  skipped.
"""

from __future__ import annotations

import json
import logging
import re
import signal
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from .faults import DivergenceError, divergence_message, likely_causes, nonfinite_tensors
from .errors import ConfigError

logger = logging.getLogger(__name__)

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
TRUE, FALSE = {"true", "yes", "1", "latest", "last"}, {"false", "no", "0", "none", ""}


class StepGuard:
    """Watches each optimizer step of a trainer for non-finite values (see the module docstring)."""

    def __init__(self, trainer: Any):
        self.trainer = trainer
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
                trainer.args.nonfinite,
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
        norm = torch.nn.utils.get_total_norm(grads, error_if_nonfinite=False) if grads else torch.zeros((), device=loss.device)
        bad = ~(torch.isfinite(loss.detach()).all() & torch.isfinite(norm)).to(loss.device)
        if self.trainer.accelerator.num_processes > 1:
            bad = self.trainer.accelerator.reduce(bad.float(), reduction="sum") > 0
        if not bool(bad):
            self.skipped_in_a_row, self.health = 0, None
            self.trainer.step_metrics.step_done()
            return
        what = self._what(norm)
        self.health = None
        args = self.trainer.args
        if args.nonfinite == "skip" and self.skipped_in_a_row < args.max_skipped_steps:
            self.skipped_in_a_row += 1
            self.skipped += 1
            if not self.scaled:  # (the loss scaler skips a step whose gradients are not finite by itself)
                model.zero_grad(set_to_none=True)  # the optimizer skips every weight without a gradient
            self.trainer.step_metrics.drop_step()  # the step's non-finite metrics are not logged
            logger.warning(
                "Step %d skipped (%s); %d skipped in a row (max_skipped_steps=%d).",
                self.trainer.state.global_step + 1, what, self.skipped_in_a_row, args.max_skipped_steps,
            )  # fmt: skip
            return
        if args.nonfinite == "skip":
            what += f", for the {self.skipped_in_a_row + 1}th step in a row (max_skipped_steps={args.max_skipped_steps})"
        self.fail(self.trainer.state.global_step + 1, what)

    def _what(self, norm: torch.Tensor) -> str:
        """What went non-finite first: the log-probabilities, a loss (and its plugin), or the gradients alone."""
        if self.health is not None:
            flags = self.health.tolist()
            mix = self.trainer.loss_mix
            names = ["the policy's log-probabilities of the chosen answers", "the policy's log-probabilities of the rejected answers"]
            if len(flags) > 2 + len(mix.components):
                names += ["the reference's log-probabilities of the chosen answers", "the reference's of the rejected answers"]
            names += [f"loss {c.name!r} (plugin {c.spec.plugin!r}) on finite log-probabilities" for c in mix.components]
            for name, finite in zip(names, flags):
                if not finite:
                    return f"{name} became non-finite"
        return f"the gradients became non-finite (gradient norm {norm.item():g}) while the loss was finite"

    def fail(self, step: int, what: str, *, saved: bool = False) -> None:
        args = self.trainer.args
        plugin_losses = [f"{c.name} ({c.spec.plugin})" for c in self.trainer.loss_mix.components if not c.spec.plugin.startswith("dpo_plugin.")]
        causes = likely_causes(
            learning_rate=args.learning_rate, fp16=args.fp16, plugin_losses=plugin_losses, plugin_first="(plugin " in what
        )
        checkpoint = last_checkpoint(args.output_dir)
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
        self.received = signal.Signals(number).name
        logger.warning("%s received: saving a checkpoint after this step, then stopping.", self.received)
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
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


def checkpoint_problem(folder: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from (None when it is intact): a missing or truncated file."""
    from safetensors import safe_open

    state = folder / "trainer_state.json"
    try:
        json.loads(state.read_text())
    except (OSError, ValueError) as error:
        return f"{state.name} is missing or unreadable ({type(error).__name__})"
    weights = sorted(folder.glob("*.safetensors"))
    if not weights and not any(folder.glob("*.bin")):
        return "it holds no model weights"
    for path in weights:
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as error:  # noqa: BLE001 -- safetensors raises its own error for a cut-short file
            return f"{path.name} is cut short or corrupted ({error})"
    return None


def _checkpoints(output_dir: str | Path) -> list[Path]:
    folder = Path(output_dir)
    found = [p for p in folder.iterdir() if p.is_dir() and CHECKPOINT.match(p.name)] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(CHECKPOINT.match(p.name).group(1)))


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest intact checkpoint of a run, or None."""
    return next((p for p in reversed(_checkpoints(output_dir)) if checkpoint_problem(p) is None), None)


def resume_checkpoint(value: Any, output_dir: str | Path) -> str | None:
    """``resume_from_checkpoint`` as a checkpoint folder to resume from, or None; errors say which file is broken."""
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in FALSE):
        return None
    if value is True or (isinstance(value, str) and value.strip().lower() in TRUE):
        for candidate in reversed(_checkpoints(output_dir)):
            problem = checkpoint_problem(candidate)
            if problem is None:
                return str(candidate)
            logger.warning("Checkpoint %s is incomplete (%s); trying the one before it.", candidate, problem)
        raise ConfigError(f"resume_from_checkpoint: true, but {str(output_dir)!r} holds no intact checkpoint-* folder to resume from.")
    folder = Path(value)
    if not folder.is_dir():
        raise ConfigError(f"resume_from_checkpoint {str(folder)!r} is not a folder (give a checkpoint-* folder, or true).")
    problem = checkpoint_problem(folder)
    if problem is not None:
        previous = last_checkpoint(folder.parent)
        hint = f" The newest intact one is {previous}." if previous else ""
        raise ConfigError(f"Cannot resume from {folder}: {problem} (was the run killed while saving?).{hint}")
    return str(folder)

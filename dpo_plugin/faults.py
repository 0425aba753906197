"""Non-finite training: what went wrong first, and the message that says what to do.

A run never applies an update computed from a non-finite loss or gradient, and never saves or checks
non-finite weights (:mod:`dpo_plugin.guard` watches the steps). Its error names the step, what
went non-finite first (the policy's or the reference's log-probabilities, a loss and its plugin,
the gradients, the weights), the likely causes in order (the learning rate, fp16 overflow, a plugin
loss) and the last good checkpoint to resume from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import DpoPluginError

#: The exit code of ``dpo-plugin train`` when training diverged.
DIVERGED_EXIT_CODE = 3
#: The exit code of ``dpo-plugin train`` when a signal stopped it after saving a checkpoint (resume it).
PREEMPTED_EXIT_CODE = 75


class DivergenceError(DpoPluginError):
    """Training produced a non-finite loss, gradient or weight; nothing non-finite was applied or saved."""

    exit_code = DIVERGED_EXIT_CODE


class Preempted(DpoPluginError):
    """A signal (SIGTERM, SIGINT) stopped training after the current step; a checkpoint was saved to resume from."""

    exit_code = PREEMPTED_EXIT_CODE


def nonfinite_tensors(named: Iterable[tuple[str, Any]]) -> list[str]:
    """The names of the tensors holding a NaN or an infinity (one device sync for all of them)."""
    import torch

    named = list(named)
    if not named:
        return []
    flags = torch.stack([torch.isfinite(t.detach()).all().to("cpu", non_blocking=True) for _, t in named])
    return [name for (name, _), finite in zip(named, flags.tolist()) if not finite]


def likely_causes(*, learning_rate: float, fp16: bool, plugin_losses: Sequence[str], plugin_first: bool = False) -> str:
    """The likely causes of a divergence, most likely first (a plugin loss first when its own output went bad)."""
    causes = [f"the learning rate ({learning_rate:g}) is too high: lower it, or warm it up"]
    if fp16:
        causes.append("fp16 overflows: train in bf16, or keep fp16 with a smaller learning rate")
    if plugin_losses:
        plugin = f"a plugin loss misbehaves: {', '.join(plugin_losses)}"
        causes.insert(0, plugin) if plugin_first else causes.append(plugin)
    return "; ".join(f"({i}) {cause}" for i, cause in enumerate(causes, 1))


def divergence_message(
    step: int, what: str, *, causes: str, checkpoint: str | Path | None, weights: bool = False
) -> str:
    """One paragraph: the step, what went non-finite, the likely causes, and where to resume from.

    ``weights``: the weights themselves are not finite (found at a save); nothing was saved.
    """
    resume = (
        f"The last good checkpoint is {checkpoint}: resume with --resume_from_checkpoint {checkpoint} after the fix."
        if checkpoint
        else "No checkpoint was saved before it (save_steps sets how often one is); start again after the fix."
    )
    kept = "Nothing was saved." if weights else "Nothing non-finite was applied to the weights or saved."
    return f"Training stopped at step {step}: {what}. {kept} Likely causes, most likely first: {causes}. {resume}"

"""Chosen log-prob drift: the policy makes the chosen answers less likely while the reward margin grows.

DPO's loss sees only the margin, so it can widen it by lowering both answers' likelihood, the chosen
one included (TRL issue 800; Pal et al. 2024, "Smaug: Fixing Failure Modes of Preference
Optimisation with DPO-Positive", arXiv 2402.13228; Razin et al. 2024, "Unintentional Unalignment:
Likelihood Displacement", arXiv 2410.08847). :class:`ChosenDriftWatch` reads it from the metrics a
host logs: ``logratio/chosen`` (mean per-token log π/π_ref on the chosen answers) below
−``bound`` while ``rewards/margins`` is above 0 and at least its first logged value. Host-free: a
trainer feeds it each training log (and warns once); the report replays it over the log history.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: The default bound, in nats per token: the chosen answers' tokens ~10% less likely than under the reference.
DEFAULT_BOUND = 0.1
LOGRATIO, MARGIN = "logratio/chosen", "rewards/margins"


def remedies(losses: Sequence[str] = ()) -> str:
    """The remedies this package has, for the losses in use: ``dpop`` and an ``sft`` term in the loss mix."""
    if "dpop" in losses:
        return "raise loss_params.dpop.dpop_lambda (DPO-Positive's penalty), or add an sft term to the loss mix"
    if "sft" in losses:
        return "raise the sft term's weight in loss_weights, or use loss_type: dpop (DPO-Positive, Pal et al. 2024)"
    return (
        "use loss_type: dpop (DPO-Positive, Pal et al. 2024, which penalises a chosen answer falling below the "
        "reference), or add an sft term to the loss mix (loss_type: [sigmoid, sft], loss_weights: [1.0, 0.5])"
    )


def drift_message(logratio: float, margin: float, losses: Sequence[str] = (), where: str = "") -> str:
    """The warning: how far the chosen answers fell, how large the margin grew, and the remedies."""
    return (
        f"{where}the chosen answers' log-probability fell below the reference's by {-logratio:.3f} nats per token "
        f"while the reward margin grew to {margin:.3f}: the margin widens by making the chosen answers less likely "
        f"too (TRL issue 800). Remedies: {remedies(losses)}."
    )


class ChosenDriftWatch:
    """Watches logged metrics for the chosen log-prob drift (see the module);
    :meth:`observe` returns its warning once."""

    def __init__(self, losses: Sequence[str] = (), bound: float = DEFAULT_BOUND):
        if not bound > 0:
            raise ValueError(f"ChosenDriftWatch: bound must be > 0 (nats per token), got {bound!r}.")
        self.losses, self.bound = list(losses), bound
        self.first_margin: float | None = None
        self.warning: str | None = None

    def observe(self, logs: Mapping[str, Any], step: int | None = None) -> str | None:
        """Feed one training log (``logratio/chosen``, ``rewards/margins``);
        the warning text the first time it shows."""
        logratio, margin = logs.get(LOGRATIO), logs.get(MARGIN)
        if self.warning is not None or not isinstance(logratio, (int, float)) or not isinstance(margin, (int, float)):
            return None
        if self.first_margin is None:
            self.first_margin = float(margin)
        if logratio < -self.bound and margin > 0 and margin >= self.first_margin:
            where = f"At step {step}, " if step is not None else ""
            self.warning = drift_message(float(logratio), float(margin), self.losses, where)
            return self.warning
        return None


def chosen_drift_in(
    log_history: Sequence[Mapping[str, Any]], losses: Sequence[str] = (), bound: float = DEFAULT_BOUND
) -> str | None:
    """The warning a :class:`ChosenDriftWatch` gave (or would have given) over a run's training log history;
    None if none."""
    watch = ChosenDriftWatch(losses, bound)
    for entry in log_history:
        warning = watch.observe(entry, entry.get("step"))
        if warning:
            return warning
    return None

"""Alignment via Optimal Transport: the logistic loss on sorted (quantile-matched) log-ratios.

These losses sort across the batch, so a pair's loss depends on the other pairs: they are
registered ``batch_coupled`` (no per-pair WPO weighting).
"""

from __future__ import annotations

import torch

from ..hookspecs import hookimpl
from ..registry import Register
from ..types import LossOutput, PairLogps
from .scores import smoothed_logistic, with_dpo_rewards


def aot(logps: PairLogps, *, beta: float = 0.1, label_smoothing: float = 0.0) -> LossOutput:
    """AOT (paired): smoothed logistic loss of ``β·(sort(log π_w − log π_l) − sort(log π_ref,w − log π_ref,l))``.

    Melnyk et al. 2024, "Distributional Preference Alignment of LLMs via Optimal Transport",
    arXiv:2406.05882 (TRL ``aot``).
    """
    if not logps.has_reference:
        logps.logratios()  # raises the error that says how to get reference log-probs
    policy, _ = torch.sort(logps.chosen - logps.rejected, dim=0)
    reference, _ = torch.sort(logps.ref_chosen - logps.ref_rejected, dim=0)
    return with_dpo_rewards(smoothed_logistic(beta * (policy - reference), label_smoothing), logps, beta)


def aot_unpaired(logps: PairLogps, *, beta: float = 0.1, label_smoothing: float = 0.0) -> LossOutput:
    """AOT (unpaired): smoothed logistic loss of ``β·(sort(u_w) − sort(u_l))``, ``u = log π/π_ref``.

    Melnyk et al. 2024, arXiv:2406.05882 (TRL ``aot_unpaired``).
    """
    chosen, rejected = logps.logratios()
    chosen_sorted, _ = torch.sort(chosen, dim=0)
    rejected_sorted, _ = torch.sort(rejected, dim=0)
    return with_dpo_rewards(smoothed_logistic(beta * (chosen_sorted - rejected_sorted), label_smoothing), logps, beta)


@hookimpl
def register_losses(register: Register) -> None:
    register("aot", aot, batch_coupled=True)
    register("aot_unpaired", aot_unpaired, batch_coupled=True)

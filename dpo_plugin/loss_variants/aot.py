"""Alignment via Optimal Transport: the logistic loss on sorted (quantile-matched) log-ratios.

These losses sort across the batch, so a pair's loss depends on the other pairs: they are
registered ``batch_coupled`` (no per-pair WPO weighting).
"""

from __future__ import annotations

import torch

from ..hookspecs import Register, hookimpl
from ..types import LossOutput, PairLogps
from .scores import smoothed_logistic, with_dpo_rewards


def aot(logps: PairLogps, *, beta: float = 0.1, label_smoothing: float = 0.0) -> LossOutput:
    """AOT (paired): ``−(1−ε) log σ(z) − ε log σ(−z)``, ``z = β·(sort(log π(y_w) − log π(y_l)) − sort(log π_ref(y_w) − log π_ref(y_l)))``.

    Melnyk et al. 2024, "Distributional Preference Alignment of LLMs via Optimal Transport",
    arXiv:2406.05882.

    TRL ``aot``; the sorts run across the batch.
    """  # noqa: E501
    if not logps.has_reference:
        logps.logratios()  # raises the error that says how to get reference log-probs
    policy, _ = torch.sort(logps.chosen - logps.rejected, dim=0)
    reference, _ = torch.sort(logps.ref_chosen - logps.ref_rejected, dim=0)
    return with_dpo_rewards(smoothed_logistic(beta * (policy - reference), label_smoothing), logps, beta)


def aot_unpaired(logps: PairLogps, *, beta: float = 0.1, label_smoothing: float = 0.0) -> LossOutput:
    """AOT (unpaired): ``−(1−ε) log σ(z) − ε log σ(−z)``, ``z = β·(sort(u_w) − sort(u_l))``.

    Melnyk et al. 2024, "Distributional Preference Alignment of LLMs via Optimal Transport",
    arXiv:2406.05882.

    TRL ``aot_unpaired``; the sorts run across the batch.
    """
    chosen, rejected = logps.logratios()
    chosen_sorted, _ = torch.sort(chosen, dim=0)
    rejected_sorted, _ = torch.sort(rejected, dim=0)
    return with_dpo_rewards(smoothed_logistic(beta * (chosen_sorted - rejected_sorted), label_smoothing), logps, beta)


@hookimpl
def register_losses(register: Register) -> None:
    register("aot", aot, batch_coupled=True)
    register("aot_unpaired", aot_unpaired, batch_coupled=True)

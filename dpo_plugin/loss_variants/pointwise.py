"""Losses on each completion's own implicit reward ``r = β·log π/π_ref``, not only their difference."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..hookspecs import Register, hookimpl
from ..types import LossOutput, PairLogps
from .scores import with_dpo_rewards


def nca_pair(logps: PairLogps, *, beta: float = 0.1) -> LossOutput:
    """NCA (pairwise): ``−log σ(r_w) − ½ log σ(−r_w) − ½ log σ(−r_l)``.

    Chen et al. 2024, "Noise Contrastive Alignment of Language Models with Explicit Rewards",
    arXiv:2402.05369.

    TRL ``nca_pair``.
    """
    chosen, rejected = logps.logratios()
    r_w, r_l = beta * chosen, beta * rejected
    losses = -F.logsigmoid(r_w) - 0.5 * F.logsigmoid(-r_w) - 0.5 * F.logsigmoid(-r_l)
    return with_dpo_rewards(losses, logps, beta)


def bco_pair(logps: PairLogps, *, beta: float = 0.1) -> LossOutput:
    """BCO (pairwise): ``−log σ(r_w) − log σ(−r_l)``, a binary classifier of chosen vs rejected.

    Jung et al. 2024, "Binary Classifier Optimization for Large Language Model Alignment",
    arXiv:2404.04656.

    TRL ``bco_pair``, without the running reward shift.
    """
    chosen, rejected = logps.logratios()
    losses = -F.logsigmoid(beta * chosen) - F.logsigmoid(-beta * rejected)
    return with_dpo_rewards(losses, logps, beta)


def apo_zero(logps: PairLogps, *, beta: float = 0.1) -> LossOutput:
    """APO-zero: ``(1 − σ(r_w)) + σ(r_l)``: raise the chosen likelihood, lower the rejected.

    D'Oosterlinck et al. 2024, "Anchored Preference Optimization and Contrastive Revisions",
    arXiv:2408.06266, Eq. 7.

    TRL ``apo_zero``; for chosen answers better than the model's own.
    """
    chosen, rejected = logps.logratios()
    losses = 1 - torch.sigmoid(beta * chosen) + torch.sigmoid(beta * rejected)
    return with_dpo_rewards(losses, logps, beta)


def apo_down(logps: PairLogps, *, beta: float = 0.1) -> LossOutput:
    """APO-down: ``σ(r_w) + (1 − σ(r_w − r_l))``: lower both likelihoods, the rejected more.

    D'Oosterlinck et al. 2024, "Anchored Preference Optimization and Contrastive Revisions",
    arXiv:2408.06266, Eq. 8.

    TRL ``apo_down``; for chosen answers worse than the model's own.
    """
    chosen, rejected = logps.logratios()
    losses = torch.sigmoid(beta * chosen) + 1 - torch.sigmoid(beta * (chosen - rejected))
    return with_dpo_rewards(losses, logps, beta)


@hookimpl
def register_losses(register: Register) -> None:
    register("nca_pair", nca_pair)
    register("bco_pair", bco_pair)
    register("apo_zero", apo_zero)
    register("apo_down", apo_down)

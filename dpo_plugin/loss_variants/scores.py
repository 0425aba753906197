"""Shared mechanics of the loss variants: implicit rewards, f-divergence scores, length normalisation.

The f-DPO scores (Wang et al. 2023, "Beyond Reverse KL", arXiv:2309.16240) replace the log-ratio
``u = log π/π_ref`` by ``f'(π/π_ref)``; they reproduce TRL 1.16's numerics, clamps included.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..types import LossOutput, PairLogps

F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")


def f_divergence_scores(
    logps: PairLogps, f_divergence_type: str = "reverse_kl", f_alpha_divergence_coef: float = 0.5
) -> tuple[Tensor, Tensor]:
    """``f'(π/π_ref)`` for chosen and rejected, with ``u = log π/π_ref``:

    - ``reverse_kl``: ``u`` (standard DPO);
    - ``forward_kl``: ``1 − e^{−u}``;
    - ``js_divergence``: ``log 2 + log σ(u)``;
    - ``alpha_divergence``: ``(e^{(α−1)u} − 1)/(α−1)``, exponent clamped as TRL does (``u`` at α = 1).
    """
    chosen, rejected = logps.logratios()
    if f_divergence_type == "reverse_kl":
        return chosen, rejected
    if f_divergence_type == "forward_kl":
        return 1 - torch.exp(-chosen), 1 - torch.exp(-rejected)
    if f_divergence_type == "js_divergence":
        return math.log(2) + F.logsigmoid(chosen), math.log(2) + F.logsigmoid(rejected)
    if f_divergence_type == "alpha_divergence":
        alpha = f_alpha_divergence_coef
        if abs(alpha - 1.0) < 1e-6:
            return chosen, rejected
        clamp_max = {torch.float16: 11.0}.get(chosen.dtype, 80.0)

        def score(u: Tensor) -> Tensor:
            t = torch.clamp(((alpha - 1.0) * u).float(), max=clamp_max)
            return (torch.exp(t) - 1.0).to(u.dtype) * (1.0 / (alpha - 1.0))

        return score(chosen), score(rejected)
    raise ValueError(f"Unknown f_divergence_type {f_divergence_type!r}; expected one of {', '.join(F_DIVERGENCES)}.")


def score_difference(
    logps: PairLogps, f_divergence_type: str = "reverse_kl", f_alpha_divergence_coef: float = 0.5
) -> Tensor:
    """``Δ = f'(chosen) − f'(rejected)``; with ``reverse_kl``, the log-ratio difference of DPO."""
    chosen, rejected = f_divergence_scores(logps, f_divergence_type, f_alpha_divergence_coef)
    return chosen - rejected


def length_normalised(chosen: Tensor, rejected: Tensor, logps: PairLogps) -> tuple[Tensor, Tensor]:
    """``chosen/|y_w|`` and ``rejected/|y_l|``, with the completion token counts clamped to ≥ 1."""
    chosen_tokens, rejected_tokens = logps.token_counts()
    return chosen / chosen_tokens, rejected / rejected_tokens


def smoothed_logistic(logits: Tensor, label_smoothing: float) -> Tensor:
    """``−(1−ε) log σ(z) − ε log σ(−z)``: the logistic loss with a fraction ε of flipped labels."""
    return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


def with_dpo_rewards(
    losses: Tensor, logps: PairLogps, beta: float, metrics: dict[str, object] | None = None
) -> LossOutput:
    """A :class:`LossOutput` whose rewards are DPO's implicit rewards ``β·log π/π_ref``."""
    chosen, rejected = logps.logratios()
    return LossOutput(losses, beta * chosen.detach(), beta * rejected.detach(), dict(metrics or {}))

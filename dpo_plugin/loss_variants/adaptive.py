"""Losses that adapt to the batch and keep state across steps (registered as factories)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..hookspecs import Register, hookimpl
from ..types import LossOutput, PairLogps
from .scores import score_difference, with_dpo_rewards


class BetaDPO:
    """β-DPO: ``−log σ(β_batch·Δ)`` on the kept pairs, ``β_batch = max(β·(1 + α·(mean_kept(Δ) − M₀)), 10⁻³)``.

    Wu et al. 2024, "β-DPO: Direct Preference Optimization with Dynamic β", arXiv:2407.08639.

    ``M₀`` and ``s_M`` are the moving mean and std of the gap ``Δ`` (momentum ``m``, updated from
    each training batch). β-guided filtering keeps a fraction ``1 − ρ`` of the pairs, drawn without
    replacement with weights ``exp(−½((Δ_i − M₀)/s_M)²)``; the kept losses are rescaled so the batch
    mean equals their mean (dropped pairs: 0). Under ``torch.no_grad()`` (evaluation) the statistics
    are not updated and no pair is dropped. Statistics are per process (the paper gathers them across
    GPUs).
    """

    def __init__(self, *, beta: float = 0.1, alpha: float = 0.6, rho: float = 0.2, momentum: float = 0.9):
        if not 0 <= rho < 1:
            raise ValueError(f"beta_dpo: rho (the fraction of pairs filtered out) must lie in [0, 1), got {rho}.")
        if not 0 <= momentum < 1:
            raise ValueError(f"beta_dpo: momentum must lie in [0, 1), got {momentum}.")
        self.beta, self.alpha, self.rho, self.momentum = beta, alpha, rho, momentum
        self.gap_mean = 0.0
        self.gap_std = 0.0

    def __call__(self, logps: PairLogps) -> LossOutput:
        delta = score_difference(logps)
        gap = delta.detach().float()
        n = gap.numel()
        training = torch.is_grad_enabled()
        if training:
            batch_std = gap.std().item() if n > 1 else 0.0
            self.gap_mean = self.momentum * self.gap_mean + (1 - self.momentum) * gap.mean().item()
            self.gap_std = self.momentum * self.gap_std + (1 - self.momentum) * batch_std
        keep = torch.ones_like(gap, dtype=torch.bool)
        if training and self.rho > 0 and n > 1:
            z = (gap - self.gap_mean) / max(self.gap_std, 1e-6)
            weights = torch.exp(-0.5 * z**2).clamp(min=torch.finfo(gap.dtype).tiny)
            kept = torch.multinomial(weights, max(1, int(n * (1 - self.rho))), replacement=False)
            keep = torch.zeros_like(keep)
            keep[kept] = True
        beta_batch = max(self.beta * (1 + self.alpha * (gap[keep].mean().item() - self.gap_mean)), 1e-3)
        scale = keep.to(delta.dtype) * (n / keep.sum().item())
        losses = -F.logsigmoid(beta_batch * delta) * scale
        return with_dpo_rewards(
            losses, logps, self.beta, {"beta": beta_batch, "kept_fraction": keep.float().mean().item()}
        )


@hookimpl
def register_losses(register: Register) -> None:
    register("beta_dpo", BetaDPO, factory=True, batch_coupled=True)

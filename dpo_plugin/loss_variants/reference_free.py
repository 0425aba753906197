"""Reference-free losses: they use only the policy's log-probabilities (no reference forward)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..hookspecs import hookimpl
from ..registry import Register
from ..types import LossOutput, PairLogps
from .scores import length_normalised, smoothed_logistic


def _mean_token_logps(logps: PairLogps) -> tuple[Tensor, Tensor]:
    return length_normalised(logps.chosen, logps.rejected, logps)


def simpo(logps: PairLogps, *, beta: float = 2.0, gamma: float = 0.5) -> LossOutput:
    """SimPO: ``−log σ(β·(log π(y_w)/|y_w| − log π(y_l)/|y_l|) − γ)``, rewards ``β·log π/|y|``.

    Meng et al. 2024, arXiv:2405.14734 (β = 2.0 and γ = 0.5, i.e. γ/β = 0.25, from the paper's setups).
    """
    chosen, rejected = _mean_token_logps(logps)
    losses = -F.logsigmoid(beta * (chosen - rejected) - gamma)
    return LossOutput(losses, beta * chosen, beta * rejected)


def cpo(logps: PairLogps, *, beta: float = 0.1, label_smoothing: float = 0.0, cpo_alpha: float = 1.0) -> LossOutput:
    """CPO: ``−log σ(β·(log π(y_w) − log π(y_l))) + α·NLL(y_w)``, NLL per chosen token.

    Xu et al. 2024, "Contrastive Preference Optimization", arXiv:2401.08417: DPO with a uniform
    reference plus a behaviour-cloning term on the chosen answers (α = cpo_alpha); label_smoothing
    as in cDPO.
    """
    chosen_mean, _ = _mean_token_logps(logps)
    nll = -chosen_mean
    preference = smoothed_logistic(beta * (logps.chosen - logps.rejected), label_smoothing)
    return LossOutput(
        preference + cpo_alpha * nll, beta * logps.chosen, beta * logps.rejected, {"nll": nll.detach().mean()}
    )


def _log1mexp(x: Tensor) -> Tensor:
    """``log(1 − e^x)`` for ``x < 0``, stable at both ends (Mächler 2012); ``x`` is clamped below 0."""
    x = x.clamp(max=-1e-6)
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo(logps: PairLogps, *, beta: float = 0.1) -> LossOutput:
    """ORPO: ``NLL(y_w) − λ·log σ(log odds(y_w) − log odds(y_l))``, ``odds(y) = p/(1−p)``, ``p = π(y)^{1/|y|}``.

    Hong et al. 2024, arXiv:2403.07691; λ is ``beta`` (as in TRL's ORPOConfig), the NLL is per
    chosen token, and rewards are ``β·log π/|y|``.
    """
    chosen, rejected = _mean_token_logps(logps)
    log_odds = (chosen - rejected) - (_log1mexp(chosen) - _log1mexp(rejected))
    ratio = F.logsigmoid(log_odds)
    nll = -chosen
    return LossOutput(
        nll - beta * ratio,
        beta * chosen,
        beta * rejected,
        {"nll": nll.detach().mean(), "log_odds_ratio": ratio.detach().mean(), "log_odds": log_odds.detach().mean()},
    )


def sft(logps: PairLogps) -> LossOutput:
    """SFT on the chosen answers: the batch's mean negative log-likelihood per chosen token.

    ``−Σ_i log π(y_w,i) / Σ_i |y_w,i|``, the same value for every pair (TRL ``sft``; always on the
    plain sums, also with ``ld_alpha``). Mixed with a preference loss it anchors the chosen
    likelihood (RPO, Pang et al. 2024, arXiv:2404.19733). Rewards: mean log-prob per token.
    """
    chosen, rejected = logps.unweighted()
    chosen_tokens, rejected_tokens = logps.token_counts()
    batch_nll = -chosen.sum() / logps.chosen_tokens.sum().clamp(min=1).to(chosen.dtype)
    return LossOutput(batch_nll.expand_as(chosen), chosen / chosen_tokens, rejected / rejected_tokens)


@hookimpl
def register_losses(register: Register) -> None:
    register("simpo", simpo, needs_reference=False)
    register("cpo", cpo, needs_reference=False)
    register("orpo", orpo, needs_reference=False)
    register("sft", sft, needs_reference=False)

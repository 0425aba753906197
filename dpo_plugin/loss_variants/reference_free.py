"""Reference-free losses: they use only the policy's log-probabilities (no reference forward)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..hookspecs import Register, hookimpl
from ..types import LossOutput, PairLogps
from .scores import length_normalised, smoothed_logistic


def _mean_token_logps(logps: PairLogps) -> tuple[Tensor, Tensor]:
    return length_normalised(logps.chosen, logps.rejected, logps)


def simpo(logps: PairLogps, *, beta: float = 2.0, gamma: float = 0.5) -> LossOutput:
    """SimPO: ``−log σ(β·(log π(y_w)/|y_w| − log π(y_l)/|y_l|) − γ)``, rewards ``β·log π/|y|``.

    Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward",
    arXiv:2405.14734.

    β = 2.0 and γ = 0.5 (γ/β = 0.25) by default, from the paper's setups.
    """
    chosen, rejected = _mean_token_logps(logps)
    losses = -F.logsigmoid(beta * (chosen - rejected) - gamma)
    return LossOutput(losses, beta * chosen, beta * rejected)


def cpo(logps: PairLogps, *, beta: float = 0.1, label_smoothing: float = 0.0, cpo_alpha: float = 1.0) -> LossOutput:
    """CPO: ``−log σ(β·(log π(y_w) − log π(y_l))) + α·NLL(y_w)``, NLL per chosen token, α = cpo_alpha.

    Xu et al. 2024, "Contrastive Preference Optimization: Pushing the Boundaries of LLM Performance
    in Machine Translation", arXiv:2401.08417.

    DPO with a uniform reference plus a behaviour-cloning term on the chosen answers; label_smoothing
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

    Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model",
    arXiv:2403.07691.

    λ is ``beta`` (as in TRL's ORPOConfig), the NLL is per chosen token, and rewards are
    ``β·log π/|y|``.
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
    """SFT on the chosen answers: ``−Σ_i log π(y_w,i) / Σ_i |y_w,i|``, the batch's NLL per chosen token.

    Pang et al. 2024, "Iterative Reasoning Preference Optimization" (RPO), arXiv:2404.19733: mixed
    with a preference loss, this term anchors the chosen likelihood.

    The same value for every pair of the batch (``i`` runs over its pairs). TRL ``sft``; always on
    the plain sums, also with ``ld_alpha``. Rewards: mean log-prob per token.
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

"""The logistic (Bradley–Terry) family: DPO and the variants that change its logit or its labels.

``Δ`` is the f-divergence score difference of :func:`~dpo_plugin.loss_variants.scores.score_difference`
(with the default ``reverse_kl``: ``log π/π_ref(y_w) − log π/π_ref(y_l)``); ``σ`` is the sigmoid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..hookspecs import Register, hookimpl
from ..types import LossOutput, PairLogps
from .scores import f_divergence_scores, length_normalised, score_difference, smoothed_logistic, with_dpo_rewards


def sigmoid(
    logps: PairLogps, *, beta: float = 0.1, f_divergence_type: str = "reverse_kl", f_alpha_divergence_coef: float = 0.5
) -> LossOutput:
    """DPO: ``−log σ(β·Δ)``.

    Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a Reward
    Model", arXiv:2305.18290.

    TRL ``sigmoid``.
    """
    delta = score_difference(logps, f_divergence_type, f_alpha_divergence_coef)
    return with_dpo_rewards(-F.logsigmoid(beta * delta), logps, beta)


def cdpo(logps: PairLogps, *, beta: float = 0.1, label_smoothing: float = 0.1) -> LossOutput:
    """Conservative DPO: ``−(1−ε) log σ(βΔ) − ε log σ(−βΔ)``, ε = label_smoothing.

    Mitchell 2023, "A note on DPO with noisy preferences and relationship to IPO",
    https://ericmitchell.ai/cdpo.pdf.

    TRL's ``sigmoid`` applied this smoothing until it was dropped in 0.29.
    """
    delta = score_difference(logps)
    return with_dpo_rewards(smoothed_logistic(beta * delta, label_smoothing), logps, beta)


def robust(
    logps: PairLogps,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 0.5,
) -> LossOutput:
    """Robust DPO: ``[−(1−ε) log σ(βΔ) + ε log σ(−βΔ)] / (1−2ε)``, unbiased under label flips of rate ε.

    Chowdhury et al. 2024, "Provably Robust DPO: Aligning Language Models with Noisy Feedback",
    arXiv:2403.00409.

    TRL ``robust``.
    """
    delta = score_difference(logps, f_divergence_type, f_alpha_divergence_coef)
    eps = label_smoothing
    losses = (-(1 - eps) * F.logsigmoid(beta * delta) + eps * F.logsigmoid(-beta * delta)) / (1 - 2 * eps)
    return with_dpo_rewards(losses, logps, beta)


def hinge(
    logps: PairLogps, *, beta: float = 0.1, f_divergence_type: str = "reverse_kl", f_alpha_divergence_coef: float = 0.5
) -> LossOutput:
    """SLiC hinge: ``max(0, 1 − β·Δ)``.

    Zhao et al. 2023, "SLiC-HF: Sequence Likelihood Calibration with Human Feedback", arXiv:2305.10425.

    TRL ``hinge``.
    """
    delta = score_difference(logps, f_divergence_type, f_alpha_divergence_coef)
    return with_dpo_rewards(torch.relu(1 - beta * delta), logps, beta)


def exo_pair(
    logps: PairLogps,
    *,
    beta: float = 0.1,
    label_smoothing: float = 1e-3,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 0.5,
) -> LossOutput:
    """EXO (pairwise): ``σ(βΔ)(log σ(βΔ) − log(1−ε)) + σ(−βΔ)(log σ(−βΔ) − log ε)``, i.e. ``KL(q ‖ p)``.

    Ji et al. 2024, "Towards Efficient Exact Optimization of Language Model Alignment",
    arXiv:2402.00856, Eq. 16.

    ``q = (σ(βΔ), σ(−βΔ))`` is the model's preference distribution, ``p = (1−ε, ε)`` the smoothed
    label. TRL ``exo_pair``. ε must be > 0; the paper recommends 1e-3, the default here (TRL has no
    default and refuses 0).
    """
    if not label_smoothing > 0:
        raise ValueError("exo_pair needs label_smoothing > 0 (log ε is part of the loss); the paper uses 1e-3.")
    logits = beta * score_difference(logps, f_divergence_type, f_alpha_divergence_coef)
    eps = torch.tensor(label_smoothing, device=logits.device)
    losses = torch.sigmoid(logits) * (F.logsigmoid(logits) - torch.log1p(-eps)) + torch.sigmoid(-logits) * (
        F.logsigmoid(-logits) - torch.log(eps)
    )
    return with_dpo_rewards(losses, logps, beta)


def discopop(
    logps: PairLogps,
    *,
    beta: float = 0.1,
    discopop_tau: float = 0.05,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 0.5,
) -> LossOutput:
    """DiscoPOP (log-ratio modulated): ``(1−w)·(−log σ(z)) + w·e^{−z}``, ``z = βΔ``, ``w = σ(z/τ)``.

    Chris Lu et al. 2024, "Discovering Preference Optimization Algorithms with and for Large Language
    Models", arXiv:2406.08414, Eq. 5.

    TRL ``discopop``; τ = discopop_tau.
    """
    logits = beta * score_difference(logps, f_divergence_type, f_alpha_divergence_coef)
    weight = torch.sigmoid(logits / discopop_tau)
    # e^{−z}·w as exp(−z + log w): the same value, without inf·0 = NaN when z ≪ 0 (TRL's form overflows there)
    exponential = torch.exp(-logits + F.logsigmoid(logits / discopop_tau))
    losses = -F.logsigmoid(logits) * (1 - weight) + exponential
    return with_dpo_rewards(losses, logps, beta)


def sigmoid_norm(
    logps: PairLogps, *, beta: float = 0.1, f_divergence_type: str = "reverse_kl", f_alpha_divergence_coef: float = 0.5
) -> LossOutput:
    """Length-normalised DPO: ``−log σ(β·(s_w/|y_w| − s_l/|y_l|))``, ``s`` the f-divergence scores.

    Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward",
    arXiv:2405.14734 (the per-token normalisation, here kept with a reference).

    TRL ``sigmoid_norm``.
    """
    chosen, rejected = length_normalised(*f_divergence_scores(logps, f_divergence_type, f_alpha_divergence_coef), logps)
    return with_dpo_rewards(-F.logsigmoid(beta * (chosen - rejected)), logps, beta)


def dpop(logps: PairLogps, *, beta: float = 0.1, dpop_lambda: float = 50.0) -> LossOutput:
    """DPO-Positive: ``−log σ(β·(Δ − λ·max(0, log π_ref(y_w) − log π(y_w))))``, λ = dpop_lambda.

    Pal et al. 2024, "Smaug: Fixing Failure Modes of Preference Optimisation with DPO-Positive",
    arXiv:2402.13228.

    Penalises any fall of the chosen likelihood below the reference's, the known failure of DPO on
    pairs with small edit distance.
    """
    delta = score_difference(logps)
    penalty = torch.clamp(logps.ref_chosen - logps.chosen, min=0)
    return with_dpo_rewards(-F.logsigmoid(beta * (delta - dpop_lambda * penalty)), logps, beta)


def rdpo(logps: PairLogps, *, beta: float = 0.1, alpha: float = 0.01) -> LossOutput:
    """Length-regularised DPO: ``−log σ(β·Δ + α·(|y_w| − |y_l|))``.

    Park et al. 2024, "Disentangling Length from Quality in Direct Preference Optimization",
    arXiv:2403.19159.

    The reward is regularised by ``−α|y|``, so a longer chosen answer earns less of its margin from
    length.
    """
    delta = score_difference(logps)
    chosen_tokens, rejected_tokens = logps.token_counts()
    return with_dpo_rewards(-F.logsigmoid(beta * delta + alpha * (chosen_tokens - rejected_tokens)), logps, beta)


@hookimpl
def register_losses(register: Register) -> None:
    register("sigmoid", sigmoid)
    register("cdpo", cdpo)
    register("robust", robust)
    register("hinge", hinge)
    register("exo_pair", exo_pair)
    register("discopop", discopop)
    register("sigmoid_norm", sigmoid_norm)
    register("dpop", dpop)
    register("rdpo", rdpo)

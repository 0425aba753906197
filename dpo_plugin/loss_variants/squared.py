"""The squared-error family: IPO and the losses that regress implicit rewards onto fixed targets."""

from __future__ import annotations

import torch.nn.functional as F

from ..hookspecs import Register, hookimpl
from ..types import LossOutput, PairLogps
from .scores import f_divergence_scores, length_normalised, score_difference, with_dpo_rewards


def ipo(
    logps: PairLogps, *, beta: float = 0.1, f_divergence_type: str = "reverse_kl", f_alpha_divergence_coef: float = 0.5
) -> LossOutput:
    """IPO, TRL's length-normalised form: ``(s_w/|y_w| − s_l/|y_l| − 1/(2β))²``, β the paper's τ.

    Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human Preferences",
    arXiv:2310.12036, Eq. 17.

    The scores are averaged per completion token as TRL does (confirmed there with the authors). For
    the paper's summed form use ``ipo_paper``.
    """
    chosen, rejected = length_normalised(*f_divergence_scores(logps, f_divergence_type, f_alpha_divergence_coef), logps)
    return with_dpo_rewards((chosen - rejected - 1 / (2 * beta)) ** 2, logps, beta)


def ipo_paper(logps: PairLogps, *, beta: float = 0.1) -> LossOutput:
    """IPO on summed log-probabilities: ``(Δ − 1/(2β))²``.

    Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human Preferences",
    arXiv:2310.12036, Eq. 17.

    As in the original DPO code's ``preference_loss``.
    """
    return with_dpo_rewards((score_difference(logps) - 1 / (2 * beta)) ** 2, logps, beta)


def sppo_hard(logps: PairLogps, *, beta: float = 0.1) -> LossOutput:
    """SPPO with hard preference probabilities: ``(u_w − 1/(2β))² + (u_l + 1/(2β))²``, ``u = log π/π_ref``.

    Wu et al. 2024, "Self-Play Preference Optimization for Language Model Alignment",
    arXiv:2405.00675, Eq. 4.7.

    With P = 1 for the winner and 0 for the loser (TRL ``sppo_hard``).
    """
    chosen, rejected = logps.logratios()
    losses = (chosen - 0.5 / beta) ** 2 + (rejected + 0.5 / beta) ** 2
    return with_dpo_rewards(losses, logps, beta)


def cal_dpo(logps: PairLogps, *, beta: float = 0.1) -> LossOutput:
    """Cal-DPO: ``−log σ(u_w − u_l) + ½[(u_w − 1/(2β))² + (u_l + 1/(2β))²]``, ``u = log π/π_ref``.

    Xiao et al. 2024, "Cal-DPO: Calibrated Direct Preference Optimization for Language Model
    Alignment", arXiv:2412.14516.

    The squared terms calibrate the implicit rewards to the scale of the true ones, so the chosen
    likelihood is not pushed down with the rejected one.
    """
    chosen, rejected = logps.logratios()
    calibration = (chosen - 1 / (2 * beta)) ** 2 + (rejected + 1 / (2 * beta)) ** 2
    return with_dpo_rewards(-F.logsigmoid(chosen - rejected) + 0.5 * calibration, logps, beta)


@hookimpl
def register_losses(register: Register) -> None:
    register("ipo", ipo)
    register("ipo_paper", ipo_paper)
    register("sppo_hard", sppo_hard)
    register("cal_dpo", cal_dpo)

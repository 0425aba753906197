"""The ``reward_margin`` check: implicit rewards of held-out pairs under the trained policy vs the reference."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ...chosen_drift import DEFAULT_BOUND, drift_message
from ...errors import ConfigError
from ...types import CheckResult
from ..context import EvalContext, PairScores
from ..verdicts import margin_verdict

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewardMarginSettings:
    """``threshold``: the accuracy interval's lower bound must exceed it (0.5); ``confidence`` (0.95);
    ``max_nonfinite_rate``: the share of non-finite margins above which the check fails (0.1); ``seed``
    of the bootstrap."""

    threshold: float = 0.5
    confidence: float = 0.95
    max_nonfinite_rate: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.threshold < 1 or not 0 < self.confidence < 1 or not 0 <= self.max_nonfinite_rate <= 1:
            raise ConfigError(
                "reward_margin: threshold must lie in [0, 1), confidence in (0, 1) and max_nonfinite_rate in [0, 1]."
            )


def _scores(ctx: EvalContext) -> tuple[PairScores, PairScores] | str:
    """The held-out pairs scored under the policy and the reference, or why they cannot be."""
    if ctx.no_pairs_note is not None:
        return ctx.no_pairs_reason()
    policy = ctx.score_pairs("policy")
    if policy is None or len(policy.chosen) == 0:
        return ctx.no_pairs_reason()
    reference = ctx.score_pairs("reference")
    if reference is None:
        return f"no reference model for the checks ({ctx.reference_note}); set reference_params: {{model: ...}}"
    if len(reference.chosen) != len(policy.chosen):
        return f"the reference scored {len(reference.chosen)} pairs, the policy {len(policy.chosen)}"
    return policy, reference


def _drift_warnings(metrics: dict[str, float]) -> list[str]:
    """The chosen log-prob drift on the held-out pairs (:mod:`dpo_plugin.chosen_drift`), logged: chosen answers less
    likely than under the reference by more than its bound per token, with a positive mean margin."""
    drift, margin = metrics["drift_chosen"], metrics["margin_mean"]
    if np.isfinite(drift) and np.isfinite(margin) and drift < -DEFAULT_BOUND and margin > 0:
        warning = drift_message(drift, margin, where="on the held-out pairs, ")
        logger.warning("reward_margin: %s", warning)
        return [warning]
    return []


def reward_margin(ctx: EvalContext, **params: object) -> CheckResult:
    """Implicit rewards β·log π/π_ref of the held-out pairs under the policy (see :func:`~..verdicts.margin_verdict`).

    Passes on the verdict: enough pairs with a finite margin, accuracy's lower bound above
    ``threshold``, the mean margin's above 0. Also reports the drift: the mean per-token log-ratio
    policy/reference on the chosen and the rejected answers (a falling chosen likelihood is DPO's
    known failure).
    """
    settings = RewardMarginSettings(**params)  # type: ignore[arg-type]
    scores = _scores(ctx)
    if isinstance(scores, str):
        return CheckResult("reward_margin", False, skipped=scores)
    policy, reference = scores
    chosen = ctx.beta * (policy.chosen - reference.chosen)
    rejected = ctx.beta * (policy.rejected - reference.rejected)
    verdict = margin_verdict(
        chosen,
        rejected,
        threshold=settings.threshold,
        confidence=settings.confidence,
        max_nonfinite_rate=settings.max_nonfinite_rate,
        seed=settings.seed,
    )
    metrics = {key: value for key, value in verdict.items() if key not in ("passed", "reasons")}
    metrics |= {
        "drift_chosen": float(np.mean((policy.chosen - reference.chosen) / np.maximum(policy.chosen_tokens, 1))),
        "drift_rejected": float(
            np.mean((policy.rejected - reference.rejected) / np.maximum(policy.rejected_tokens, 1))
        ),
    }
    warnings = _drift_warnings(metrics)
    logger.info(
        "reward_margin: accuracy %.3f [%.3f, %.3f], margin %.3f [%.3f, %.3f] over %d pairs",
        *(verdict[key] for key in ("accuracy", "low", "high", "margin_mean", "margin_low", "margin_high", "n")),
    )
    return CheckResult(
        "reward_margin",
        verdict["passed"],
        metrics,
        interval=(verdict["low"], verdict["high"]),
        threshold=settings.threshold,
        details={
            "margins": (chosen - rejected).tolist(),
            "reasons": verdict["reasons"],
            "warnings": warnings,
            "reference": ctx.reference_note,
            "beta": ctx.beta,
        },
    )

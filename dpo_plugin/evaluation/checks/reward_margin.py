"""The ``reward_margin`` check: implicit rewards of held-out pairs under the trained policy vs the reference."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from ...errors import ConfigError
from ...types import CheckResult
from ..context import EvalContext

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewardMarginSettings:
    """``threshold``: the accuracy interval's lower bound must exceed it (0.5); ``confidence`` (0.95); ``seed``."""

    threshold: float = 0.5
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.threshold < 1 or not 0 < self.confidence < 1:
            raise ConfigError("reward_margin: threshold must lie in [0, 1) and confidence in (0, 1).")


def reward_margin(ctx: EvalContext, **params: object) -> CheckResult:
    """Mean margin β·[(log π/π_ref)(y_w) − (log π/π_ref)(y_l)] with a bootstrap interval, accuracy with Wilson's.

    Passes when the accuracy interval's lower bound exceeds ``threshold`` and the margin's is above 0.
    Also reports the mean chosen reward (a falling chosen likelihood is DPO's known failure) and the
    drift: the mean per-token log-ratio policy/reference on the chosen and the rejected answers.
    """
    import evaluate

    from ...metrics import metric_path

    settings = RewardMarginSettings(**params)  # type: ignore[arg-type]
    if ctx.no_pairs_note is not None:
        return CheckResult("reward_margin", False, skipped=ctx.no_pairs_reason())
    policy = ctx.score_pairs("policy")
    if policy is None or len(policy.chosen) == 0:
        return CheckResult("reward_margin", False, skipped=ctx.no_pairs_reason())
    reference = ctx.score_pairs("reference")
    if reference is None:
        return CheckResult(
            "reward_margin",
            False,
            skipped=f"no reference model for the checks ({ctx.reference_note}); set reference_params: {{model: ...}}",
        )
    n = len(policy.chosen)
    if len(reference.chosen) != n:
        return CheckResult("reward_margin", False, skipped=f"the reference scored {len(reference.chosen)} pairs, the policy {n}")
    chosen = ctx.beta * (policy.chosen - reference.chosen)
    rejected = ctx.beta * (policy.rejected - reference.rejected)
    stats = evaluate.load(metric_path("reward_margin")).compute(
        chosen_rewards=chosen.tolist(), rejected_rewards=rejected.tolist(), confidence=settings.confidence, seed=settings.seed
    )
    accuracy_low = stats["accuracy_interval"][0]
    margin_low = stats["margin_interval"][0]
    reasons = []
    if not accuracy_low > settings.threshold:
        reasons.append(f"the accuracy interval's lower bound {accuracy_low:.3f} does not exceed {settings.threshold}")
    if math.isnan(margin_low) or margin_low <= 0:
        reasons.append(f"the margin interval's lower bound {margin_low:.3f} is not above 0")
    passed = not reasons
    metrics = {
        **{k: v for k, v in stats.items() if not isinstance(v, list)},
        "margin_low": margin_low,
        "margin_high": stats["margin_interval"][1],
        "drift_chosen": float(np.mean((policy.chosen - reference.chosen) / np.maximum(policy.chosen_tokens, 1))),
        "drift_rejected": float(np.mean((policy.rejected - reference.rejected) / np.maximum(policy.rejected_tokens, 1))),
    }
    logger.info(
        "reward_margin: accuracy %.3f [%.3f, %.3f], margin %.3f [%.3f, %.3f]",
        stats["accuracy"],
        *stats["accuracy_interval"],
        stats["margin_mean"],
        *stats["margin_interval"],
    )
    return CheckResult(
        "reward_margin",
        passed,
        metrics,
        interval=tuple(stats["accuracy_interval"]),
        threshold=settings.threshold,
        details={"margins": (chosen - rejected).tolist(), "reasons": reasons, "reference": ctx.reference_note, "beta": ctx.beta},
    )

"""The ``win_rate`` check: generations of the policy vs the reference on held-out prompts, judged both ways."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

from ...errors import ConfigError
from ...types import CheckResult
from ..context import EvalContext
from ..generation import completion_logps, generate
from ..judges.base import prompt_text
from ..verdicts import prompt_outcome, win_rate_verdict

VERDICT_NAMES = {
    "win": "policy wins",
    "loss": "reference wins",
    "tie": "tie",
    "disagreement": "the orders disagree",
    "failure": "judge failure",
}

#: The settings passed to :func:`~..generation.generate` (with the seed), and reported with the result.
GENERATION_KEYS = ("max_new_tokens", "do_sample", "temperature", "top_p", "batch_size", "seed")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WinRateSettings:
    """Generation and decision settings of the win-rate check (all optional in ``check_params.win_rate``)."""

    threshold: float = 0.5
    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 8
    seed: int | None = None
    max_prompts: int | None = None
    samples: int = 10
    max_empty_fraction: float = 0.5
    max_failure_rate: float = 0.1
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ConfigError(
                f"win_rate: max_new_tokens={self.max_new_tokens!r} generates empty completions; it must be an integer >= 1."
            )
        if self.do_sample and (self.temperature <= 0 or not 0 < self.top_p <= 1):
            raise ConfigError("win_rate: sampling needs temperature > 0 and 0 < top_p <= 1.")
        if not 0 <= self.threshold < 1:
            raise ConfigError(f"win_rate: threshold must lie in [0, 1), got {self.threshold}.")
        if self.batch_size < 1 or (self.max_prompts is not None and self.max_prompts < 1):
            raise ConfigError("win_rate: batch_size and max_prompts must be >= 1.")
        if not 0 <= self.max_failure_rate <= 1 or not 0 < self.confidence < 1:
            raise ConfigError("win_rate: max_failure_rate must lie in [0, 1] and confidence in (0, 1).")


@dataclass(frozen=True)
class Judged:
    """What the check gathered: completions of both models, the judge's verdicts in both orders, its failures."""

    prompts: list[Any]
    policy: list[str]
    reference: list[str]
    policy_first: list[Any]
    policy_second: list[Any]
    judge_errors: list[str]
    logratio: float


def _gather(ctx: EvalContext, s: WinRateSettings, prompts: list[Any], settings: dict[str, Any]) -> Judged | None:
    """Generate from both models, score the log-ratio on the policy's completions, judge both orders; None without a reference."""
    policy = generate(ctx.policy, ctx.tokenizer, prompts, desc="Generating (policy)", **settings)
    policy_logps = completion_logps(ctx.policy, policy.prompt_ids, policy.completion_ids, batch_size=s.batch_size)
    with ctx.reference_model() as model:
        if model is None:
            return None
        reference = generate(model, ctx.tokenizer, prompts, desc="Generating (reference)", **settings)
        reference_logps = completion_logps(model, policy.prompt_ids, policy.completion_ids, batch_size=s.batch_size)
    tokens = sum(n for _, n in policy_logps)
    logratio = (sum(p for p, _ in policy_logps) - sum(r for r, _ in reference_logps)) / tokens if tokens else math.nan
    errors = getattr(ctx.judge, "errors", [])  # a third-party judge may keep none
    errors_before = len(errors)
    first = ctx.judge(prompts, policy.texts, reference.texts)
    second = ctx.judge(prompts, reference.texts, policy.texts)
    return Judged(
        prompts, policy.texts, reference.texts, list(first), list(second), list(errors[errors_before:]), logratio
    )


def judge_name(judge: Any) -> str:
    """How the report names a judge: the name of the function it is or wraps, else of its class."""
    return getattr(getattr(judge, "function", judge), "__name__", None) or type(judge).__name__


def _warnings(verdict: dict[str, Any], judge: str, confidence: float) -> list[str]:
    """Findings that do not fail the check by themselves: values that were not verdicts, a position-biased judge."""
    found = []
    if verdict["invalid_verdicts"]:
        found.append(
            f"judge {judge} returned {verdict['invalid_verdicts']} values that are not verdicts (0, 0.5, 1 or None), "
            f"counted as failures: {'; '.join(verdict['invalid_examples'])}"
        )
    if verdict["position_bias_p_value"] < 1 - confidence:
        found.append(
            f"judge {judge} is position-biased: {verdict['position_bias']:.0%} of its picks are the answer shown first "
            f"(p = {verdict['position_bias_p_value']:.2g}); judging both orders cancels the bias but pulls the win rate toward 0.5"
        )
    return found


def _result(ctx: EvalContext, s: WinRateSettings, judged: Judged, verdict: dict[str, Any]) -> CheckResult:
    """The CheckResult from the verdict, adding the empty-completion condition, the warnings and side-by-side samples."""
    n_prompts = len(judged.prompts)
    empty = {"policy": sum(not t for t in judged.policy), "reference": sum(not t for t in judged.reference)}
    reasons = verdict["reasons"] + [
        f"{count} of {n_prompts} {who} completions are empty (check max_new_tokens and EOS settings)"
        for who, count in empty.items()
        if count / n_prompts > s.max_empty_fraction
    ]
    warnings = _warnings(verdict, judge_name(ctx.judge), s.confidence)
    for warning in warnings:
        logger.warning("win_rate: %s", warning)
    metrics = {key: value for key, value in verdict.items() if key not in ("passed", "reasons", "invalid_examples")}
    metrics |= {f"empty_{who}": count for who, count in empty.items()}
    metrics["kl_estimate" if s.do_sample else "logratio_greedy"] = judged.logratio
    rows = zip(judged.prompts, judged.reference, judged.policy, judged.policy_first, judged.policy_second)
    samples = [
        {"prompt": prompt_text(p), "reference": r, "policy": q, "verdict": VERDICT_NAMES[prompt_outcome(a, b)]}
        for p, r, q, a, b in list(rows)[: s.samples]
    ]
    logger.info(
        "win_rate: %(win_rate).3f [%(low).3f, %(high).3f] over %(n)d prompts "
        "(%(ties)d ties, %(disagreements)d disagreements, %(failures)d failures)",
        verdict,
    )
    return CheckResult(
        "win_rate",
        not reasons,
        metrics,
        interval=(verdict["low"], verdict["high"]),
        threshold=s.threshold,
        details={
            "samples": samples,
            "judge_errors": (judged.judge_errors + verdict["invalid_examples"])[:20],
            "reasons": reasons,
            "warnings": warnings,
            "reference": ctx.reference_note,
            "generation": {k: v for k, v in asdict(s).items() if k in GENERATION_KEYS},
        },
    )


def win_rate(ctx: EvalContext, **params: object) -> CheckResult:
    """Win rate of the policy over the reference, judged in both orders (see :func:`~..verdicts.win_rate_verdict`).

    Per prompt: a win when the judge prefers the policy in both orders, a loss when it prefers the
    reference in both, ½ for a tie or a disagreement. Passes on the verdict's conditions (failures
    count as losses) and when at most ``max_empty_fraction`` of either model's completions are empty.
    Also estimates KL(π‖π_ref) per token on the policy's own samples (with ``do_sample``; with greedy
    decoding the same quantity is reported as a log-ratio, not a KL estimate).
    """
    s = WinRateSettings(**params)  # type: ignore[arg-type]
    prompts = ctx.prompts[: s.max_prompts] if s.max_prompts else list(ctx.prompts)
    if ctx.no_pairs_note is not None or not prompts:
        return CheckResult("win_rate", False, skipped=ctx.no_pairs_reason())
    if ctx.judge is None:
        return CheckResult("win_rate", False, skipped="no judge configured (judge: function/reward_model/llm/openai)")
    settings = {key: getattr(s, key) for key in GENERATION_KEYS} | {"seed": ctx.seed if s.seed is None else s.seed}
    judged = _gather(ctx, s, prompts, settings)
    if judged is None:
        reason = f"no reference model to generate from ({ctx.reference_note}); set reference_params: {{model: ...}}"
        return CheckResult("win_rate", False, skipped=reason)
    verdict = win_rate_verdict(
        judged.policy_first,
        judged.policy_second,
        threshold=s.threshold,
        max_failure_rate=s.max_failure_rate,
        confidence=s.confidence,
    )
    return _result(ctx, s, judged, verdict)

"""The ``win_rate`` check: generations of the policy vs the reference on held-out prompts, judged both ways.

Beside the raw win rate it reports the length-controlled one (:mod:`..length_control`), both sides' mean
answer length and the degeneration measures of the same generations (:mod:`..degeneration`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

from ...errors import ConfigError
from ...types import CheckResult
from ..context import EvalContext
from ..degeneration import answer_measures, degeneration_verdict
from ..generation import Generations, cached_generate, completion_logps
from ..judges.base import prompt_text
from ..length_control import length_controlled_verdict
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
    """Generation and decision settings of the win-rate check (all optional in ``check_params.win_rate``).

    ``length_controlled``: decide on the length-controlled win rate instead of the raw one (both are reported).
    """

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
    length_controlled: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.length_controlled, bool):
            raise ConfigError(f"win_rate: length_controlled must be true or false, got {self.length_controlled!r}.")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ConfigError(
                f"win_rate: max_new_tokens={self.max_new_tokens!r} generates empty completions; "
                "it must be an integer >= 1."
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
    policy_generations: Generations | None = None
    reference_generations: Generations | None = None


def _gather(ctx: EvalContext, s: WinRateSettings, prompts: list[Any], settings: dict[str, Any]) -> Judged | None:
    """Generate from both models, score the log-ratio on the policy's completions, judge both orders;
    None without a reference."""
    policy = cached_generate(ctx.generations, "policy", ctx.policy, ctx.tokenizer, prompts, settings)
    policy_logps = completion_logps(ctx.policy, policy.prompt_ids, policy.completion_ids, batch_size=s.batch_size)
    with ctx.reference_model() as model:
        if model is None:
            return None
        reference = cached_generate(ctx.generations, "reference", model, ctx.tokenizer, prompts, settings)
        reference_logps = completion_logps(model, policy.prompt_ids, policy.completion_ids, batch_size=s.batch_size)
    tokens = sum(n for _, n in policy_logps)
    logratio = (sum(p for p, _ in policy_logps) - sum(r for r, _ in reference_logps)) / tokens if tokens else math.nan
    errors = getattr(ctx.judge, "errors", [])  # a third-party judge may keep none
    errors_before = len(errors)
    first = ctx.judge(prompts, policy.texts, reference.texts)
    second = ctx.judge(prompts, reference.texts, policy.texts)
    return Judged(
        prompts,
        policy.texts,
        reference.texts,
        list(first),
        list(second),
        list(errors[errors_before:]),
        logratio,
        policy,
        reference,
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
            f"(p = {verdict['position_bias_p_value']:.2g}); judging both orders cancels the bias "
            "but pulls the win rate toward 0.5"
        )
    return found


#: The length-controlled verdict's keys reported among the check's metrics (its counts repeat the raw verdict's).
LC_METRICS = (
    "lc_win_rate",
    "lc_low",
    "lc_high",
    "conservative_lc_win_rate",
    "conservative_lc_low",
    "length_coefficient",
    "length_coefficient_se",
    "se_inflation",
    "confounded",
    "lc_n",
    "mean_length_policy",
    "mean_length_reference",
    "mean_length_difference",
    "length_difference_sd",
    "policy_longer_share",
)


@dataclass(frozen=True)
class Verdicts:
    """The raw and the length-controlled verdicts on the same judgements, and the degeneration of the same answers."""

    raw: dict[str, Any]
    lc: dict[str, Any]
    degeneration: dict[str, Any]


def _verdicts(s: WinRateSettings, judged: Judged) -> Verdicts:
    """Every verdict of the check, from exactly the public functions (:func:`win_rate_verdict`,
    :func:`length_controlled_verdict`)."""
    decision = {"threshold": s.threshold, "max_failure_rate": s.max_failure_rate, "confidence": s.confidence}
    policy, reference = judged.policy_generations, judged.reference_generations
    raw = win_rate_verdict(judged.policy_first, judged.policy_second, **decision)
    lc = length_controlled_verdict(
        judged.policy_first, judged.policy_second, policy.lengths, reference.lengths, **decision
    )
    measures = [answer_measures(g, s.max_new_tokens) for g in (policy, reference)]
    return Verdicts(raw, lc, degeneration_verdict(*measures, confidence=s.confidence))


def _length_warnings(s: WinRateSettings, v: Verdicts) -> list[str]:
    """Findings on length when the raw win rate decides (else the LC verdict's reasons say them): confounded, LC not
    estimable, or raw passing where LC does not."""
    lc = v.lc
    if s.length_controlled:
        return []
    if lc["confounded"]:
        why = (
            "the length difference alone predicts the verdicts"
            if lc["length_separates"]
            else f"controlling for length inflates the win rate's standard error {lc['se_inflation']:.1f}×"
        )
        return [
            f"length and preference are confounded: {why} "
            f"(the policy answered longer on {lc['policy_longer_share']:.0%} "
            f"of prompts, {lc['mean_length_difference']:+.1f} tokens on average); the length-controlled estimate "
            + ("does not exist" if lc["length_separates"] else "is unstable and cannot pass")
        ]
    if lc["lc_not_estimable"]:
        return [f"length-controlled win rate not estimable: {lc['lc_not_estimable']}"]
    if v.raw["passed"] and not lc["passed"]:
        return [
            f"the raw win rate passes but the length-controlled one does not ({lc['lc_win_rate']:.3f} "
            f"[{lc['lc_low']:.3f}, {lc['lc_high']:.3f}], length coefficient φ = {lc['length_coefficient']:.2f}): the "
            "judge may be rewarding length; consider length_controlled: true"
        ]
    return []


def _metrics(s: WinRateSettings, judged: Judged, v: Verdicts, empty: dict[str, int]) -> dict[str, Any]:
    """The raw verdict's metrics, empty completions, the log-ratio, then the LC metrics and both sides' degeneration."""
    metrics = {key: value for key, value in v.raw.items() if key not in ("passed", "reasons", "invalid_examples")}
    metrics |= {f"empty_{who}": count for who, count in empty.items()}
    metrics["kl_estimate" if s.do_sample else "logratio_greedy"] = judged.logratio
    metrics |= {key: v.lc[key] for key in LC_METRICS} | {"lc_passed": v.lc["passed"]}
    sides = ("policy", "reference")
    return metrics | {
        f"{m}_{side}": v.degeneration[f"{m}_{side}"] for m in ("unfinished", "repetition") for side in sides
    }


def _per_prompt(judged: Judged) -> dict[str, list[Any]]:
    """Per prompt: both answers' token lengths, their difference policy − reference and the score (1, ½, 0; None: a
    judge failure)."""
    names = {"win": 1.0, "loss": 0.0, "failure": None}
    scores = [names.get(prompt_outcome(a, b), 0.5) for a, b in zip(judged.policy_first, judged.policy_second)]
    policy, reference = judged.policy_generations.lengths, judged.reference_generations.lengths
    return {
        "policy_lengths": list(policy),
        "reference_lengths": list(reference),
        "length_differences": [p - r for p, r in zip(policy, reference)],
        "prompt_scores": scores,
    }


def _result(ctx: EvalContext, s: WinRateSettings, judged: Judged, v: Verdicts) -> CheckResult:
    """The CheckResult from the deciding verdict (LC with ``length_controlled``), adding the empty-completion condition,
    the warnings and side-by-side samples."""
    decided = v.lc if s.length_controlled else v.raw
    n_prompts = len(judged.prompts)
    empty = {"policy": sum(not t for t in judged.policy), "reference": sum(not t for t in judged.reference)}
    reasons = decided["reasons"] + [
        f"{count} of {n_prompts} {who} completions are empty (check max_new_tokens and EOS settings)"
        for who, count in empty.items()
        if count / n_prompts > s.max_empty_fraction
    ]
    warnings = _warnings(v.raw, judge_name(ctx.judge), s.confidence) + _length_warnings(s, v)
    warnings += [f"{r}; the degeneration check tests it" for r in v.degeneration["reasons"]]
    for warning in warnings:
        logger.warning("win_rate: %s", warning)
    rows = zip(judged.prompts, judged.reference, judged.policy, judged.policy_first, judged.policy_second)
    samples = [
        {"prompt": prompt_text(p), "reference": r, "policy": q, "verdict": VERDICT_NAMES[prompt_outcome(a, b)]}
        for p, r, q, a, b in list(rows)[: s.samples]
    ]
    _log_summary(v)
    low, high = (v.lc["lc_low"], v.lc["lc_high"]) if s.length_controlled else (v.raw["low"], v.raw["high"])
    return CheckResult(
        "win_rate",
        not reasons,
        _metrics(s, judged, v, empty),
        interval=None if low is None else (low, high),
        threshold=s.threshold,
        details={
            "samples": samples,
            "judge_errors": (judged.judge_errors + v.raw["invalid_examples"])[:20],
            "reasons": reasons,
            "warnings": warnings,
            "reference": ctx.reference_note,
            "generation": {key: value for key, value in asdict(s).items() if key in GENERATION_KEYS},
            "headline": "lc_win_rate" if s.length_controlled else "win_rate",
            **_per_prompt(judged),
        },
    )


def _log_summary(v: Verdicts) -> None:
    logger.info(
        "win_rate: %(win_rate).3f [%(low).3f, %(high).3f] over %(n)d prompts "
        "(%(ties)d ties, %(disagreements)d disagreements, %(failures)d failures)",
        v.raw,
    )
    if v.lc["lc_win_rate"] is not None:
        logger.info(
            "win_rate: length-controlled %(lc_win_rate).3f [%(lc_low).3f, %(lc_high).3f], length coefficient "
            "%(length_coefficient).2f; mean answer length %(mean_length_policy).1f (policy) "
            "vs %(mean_length_reference).1f",
            v.lc,
        )


def win_rate(ctx: EvalContext, **params: object) -> CheckResult:
    """Win rate of the policy over the reference, judged in both orders (see :func:`~..verdicts.win_rate_verdict`).

    Per prompt: a win when the judge prefers the policy in both orders, a loss when it prefers the
    reference in both, ½ for a tie or a disagreement. Passes on the verdict's conditions (failures
    count as losses) and when at most ``max_empty_fraction`` of either model's completions are empty;
    with ``length_controlled: true`` on :func:`~..length_control.length_controlled_verdict` instead
    (always reported, with both sides' mean answer length). Also estimates KL(π‖π_ref) per token on
    the policy's own samples (with ``do_sample``; with greedy decoding the same quantity is reported as
    a log-ratio, not a KL estimate), and the degeneration measures of both sides' answers.
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
    return _result(ctx, s, judged, _verdicts(s, judged))

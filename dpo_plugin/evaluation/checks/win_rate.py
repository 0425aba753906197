"""The ``win_rate`` check: generations of the policy vs the reference on held-out prompts, judged both ways."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

from ...errors import ConfigError
from ...types import CheckResult
from ..context import EvalContext
from ..generation import completion_logps, generate
from ..judges.base import prompt_text
from ..statistics import prompt_outcome

VERDICT_NAMES = {"win": "policy wins", "loss": "reference wins", "tie": "tie", "failure": "judge failure"}

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


def win_rate(ctx: EvalContext, **params: object) -> CheckResult:
    """Win rate of the policy over the reference, judged in both orders (Wilson interval, sign test).

    Per prompt: a win when the judge prefers the policy in both orders, a loss when it prefers the
    reference in both, ½ otherwise; judge failures are excluded and reported. Passes when the
    interval's lower bound exceeds ``threshold``; never on zero usable prompts. Also estimates
    KL(π‖π_ref) per token on the policy's own samples (with ``do_sample``; with greedy decoding the
    same quantity is reported as a log-ratio, not a KL estimate).
    """
    import evaluate

    from ...metrics import metric_path

    s = WinRateSettings(**params)  # type: ignore[arg-type]
    prompts = ctx.prompts[: s.max_prompts] if s.max_prompts else list(ctx.prompts)
    if ctx.no_pairs_note is not None or not prompts:
        return CheckResult("win_rate", False, skipped=ctx.no_pairs_reason())
    if ctx.judge is None:
        return CheckResult("win_rate", False, skipped="no judge configured (judge: function/reward_model/llm/openai)")
    seed = ctx.seed if s.seed is None else s.seed
    settings = dict(max_new_tokens=s.max_new_tokens, do_sample=s.do_sample, temperature=s.temperature, top_p=s.top_p, batch_size=s.batch_size, seed=seed)
    policy = generate(ctx.policy, ctx.tokenizer, prompts, desc="Generating (policy)", **settings)
    policy_logps = completion_logps(ctx.policy, policy.prompt_ids, policy.completion_ids, batch_size=s.batch_size)
    with ctx.reference_model() as reference_model:
        if reference_model is None:
            return CheckResult(
                "win_rate",
                False,
                skipped=f"no reference model to generate from ({ctx.reference_note}); set reference_params: {{model: ...}}",
            )
        reference = generate(reference_model, ctx.tokenizer, prompts, desc="Generating (reference)", **settings)
        reference_logps = completion_logps(reference_model, policy.prompt_ids, policy.completion_ids, batch_size=s.batch_size)
    tokens = sum(n for _, n in policy_logps)
    logratio = (sum(p for p, _ in policy_logps) - sum(r for r, _ in reference_logps)) / tokens if tokens else math.nan
    empty = {"policy": sum(not t for t in policy.texts), "reference": sum(not t for t in reference.texts)}

    errors = getattr(ctx.judge, "errors", [])  # a third-party judge may keep none
    errors_before = len(errors)
    first = ctx.judge(prompts, policy.texts, reference.texts)
    second = ctx.judge(prompts, reference.texts, policy.texts)
    judge_errors = list(errors[errors_before:])
    stats = evaluate.load(metric_path("win_rate")).compute(policy_first=first, policy_second=second, confidence=s.confidence)
    metrics = {
        **{k: v for k, v in stats.items() if k != "interval"},
        "empty_policy": empty["policy"],
        "empty_reference": empty["reference"],
        ("kl_estimate" if s.do_sample else "logratio_greedy"): logratio,
    }
    interval = tuple(stats["interval"])
    reasons = []
    if stats["n"] == 0:
        reasons.append("no usable prompts (every judgement failed)")
    failure_rate = stats["failures"] / len(prompts)
    if failure_rate > s.max_failure_rate:
        reasons.append(f"the judge failed on {failure_rate:.0%} of prompts (max {s.max_failure_rate:.0%}): {judge_errors[:3]}")
    for who, count in empty.items():
        if count / len(prompts) > s.max_empty_fraction:
            reasons.append(f"{count} of {len(prompts)} {who} completions are empty (check max_new_tokens and EOS settings)")
    if not reasons and interval[0] <= s.threshold:
        reasons.append(f"the interval's lower bound {interval[0]:.3f} does not exceed the threshold {s.threshold}")
    passed = not reasons
    samples = [
        {"prompt": prompt_text(p), "reference": r, "policy": q, "verdict": VERDICT_NAMES[prompt_outcome(a, b)]}
        for p, r, q, a, b in list(zip(prompts, reference.texts, policy.texts, first, second))[: s.samples]
    ]
    logger.info("win_rate: %.3f [%.3f, %.3f] over %d prompts (%d ties, %d failures)", stats["win_rate"], *interval, stats["n"], stats["ties"], stats["failures"])
    return CheckResult(
        "win_rate",
        passed,
        metrics,
        interval=interval,
        threshold=s.threshold,
        details={
            "samples": samples,
            "judge_errors": judge_errors[:20],
            "reasons": reasons,
            "reference": ctx.reference_note,
            "generation": {k: v for k, v in asdict(s).items() if k in settings},
        },
    )

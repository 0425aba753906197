"""The ``degeneration`` check: do the policy's answers end and avoid repeating themselves as often as the
reference's?"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from ...errors import ConfigError
from ...types import CheckResult
from ..context import EvalContext
from ..degeneration import NGRAM, answer_measures, degeneration_verdict
from ..generation import cached_generate
from ..judges.base import prompt_text

logger = logging.getLogger(__name__)

#: The settings passed to generation; the same names and defaults as the win-rate check's, so that with the
#: defaults both checks judge the same answers, generated once.
GENERATION_KEYS = ("max_new_tokens", "do_sample", "temperature", "top_p", "batch_size", "seed")


@dataclass(frozen=True)
class DegenerationSettings:
    """Generation as in ``win_rate`` (``max_new_tokens`` … ``max_prompts``); ``ngram`` of the repetition rate (4);
    ``max_unfinished_increase`` / ``max_repetition_increase``:
    how much worse than the reference the policy may be (0.1);
    ``confidence`` of the intervals (0.95); ``samples``: the worst answers shown (5)."""

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 8
    seed: int | None = None
    max_prompts: int | None = None
    ngram: int = NGRAM
    max_unfinished_increase: float = 0.1
    max_repetition_increase: float = 0.1
    confidence: float = 0.95
    samples: int = 5

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ConfigError("degeneration: max_new_tokens and batch_size must be integers >= 1.")
        if self.do_sample and (self.temperature <= 0 or not 0 < self.top_p <= 1):
            raise ConfigError("degeneration: sampling needs temperature > 0 and 0 < top_p <= 1.")
        if not isinstance(self.ngram, int) or self.ngram < 1 or (self.max_prompts is not None and self.max_prompts < 1):
            raise ConfigError("degeneration: ngram and max_prompts must be integers >= 1.")
        limits = (self.max_unfinished_increase, self.max_repetition_increase)
        if not all(0 <= limit <= 1 for limit in limits) or not 0 < self.confidence < 1:
            raise ConfigError("degeneration: the max_*_increase limits must lie in [0, 1] and confidence in (0, 1).")


def _samples(
    prompts: list[Any], texts: tuple[list[str], list[str]], measures: dict[str, Any], count: int, ngram: int
) -> list[dict[str, Any]]:
    """The policy's ``count`` most degenerate answers beside the reference's: unfinished first, then by repetition."""
    order = sorted(range(len(prompts)), key=lambda i: (-measures["unfinished"][i], -measures["repetition"][i]))
    kept = [i for i in order[:count] if measures["unfinished"][i] or measures["repetition"][i]]

    def verdict(i: int) -> str:
        repeats = f"repeats {measures['repetition'][i]:.0%} of its {ngram}-grams"
        return f"unfinished, {repeats}" if measures["unfinished"][i] else repeats

    return [
        {"prompt": prompt_text(prompts[i]), "reference": texts[1][i], "policy": texts[0][i], "verdict": verdict(i)}
        for i in kept
    ]


def degeneration(ctx: EvalContext, **params: object) -> CheckResult:
    """Answers that hit ``max_new_tokens`` without EOS, and repeated n-grams, policy against reference on the held-out
    prompts (see :func:`~..degeneration.degeneration_verdict`); reuses the win-rate check's generations when it ran with
    the same generation settings. Fails when the policy is worse by more than a threshold, significantly."""
    s = DegenerationSettings(**params)  # type: ignore[arg-type]
    prompts = ctx.prompts[: s.max_prompts] if s.max_prompts else list(ctx.prompts)
    if ctx.no_pairs_note is not None or not prompts:
        return CheckResult("degeneration", False, skipped=ctx.no_pairs_reason())
    settings = {key: getattr(s, key) for key in GENERATION_KEYS} | {"seed": ctx.seed if s.seed is None else s.seed}
    policy = cached_generate(ctx.generations, "policy", ctx.policy, ctx.tokenizer, prompts, settings)
    with ctx.reference_model() as model:
        if model is None:
            reason = f"no reference model to generate from ({ctx.reference_note}); set reference_params: {{model: ...}}"
            return CheckResult("degeneration", False, skipped=reason)
        reference = cached_generate(ctx.generations, "reference", model, ctx.tokenizer, prompts, settings)
    measures = [answer_measures(g, s.max_new_tokens, s.ngram) for g in (policy, reference)]
    verdict = degeneration_verdict(
        *measures,
        max_unfinished_increase=s.max_unfinished_increase,
        max_repetition_increase=s.max_repetition_increase,
        confidence=s.confidence,
        seed=ctx.seed,
    )
    logger.info(
        "degeneration: unfinished %.3f (policy) vs %.3f, repetition %.3f vs %.3f over %d prompts",
        *(
            verdict[key]
            for key in ("unfinished_policy", "unfinished_reference", "repetition_policy", "repetition_reference", "n")
        ),
    )
    return CheckResult(
        "degeneration",
        verdict["passed"],
        {key: value for key, value in verdict.items() if key not in ("passed", "reasons")},
        interval=(verdict["unfinished_low"], verdict["unfinished_high"]),
        threshold=s.max_unfinished_increase,
        details={
            "reasons": verdict["reasons"],
            "reference": ctx.reference_note,
            "headline": "unfinished_difference",
            "generation": {key: value for key, value in asdict(s).items() if key in GENERATION_KEYS},
            "ngram": s.ngram,
            "samples": _samples(prompts, (policy.texts, reference.texts), measures[0], s.samples, s.ngram),
        },
    )

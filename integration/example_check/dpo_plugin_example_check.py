"""An example third-party plugin: the ``length_growth`` check (DPO is known to lengthen answers)."""

from dataclasses import dataclass

import dpo_plugin
from dpo_plugin.evaluation.generation import generate


@dataclass(frozen=True)
class LengthGrowthSettings:
    """``check_params: {length_growth: {...}}``, validated before training starts."""

    max_ratio: float = 1.5
    max_new_tokens: int = 64
    max_prompts: int | None = None

    def __post_init__(self):
        if not self.max_ratio > 0 or self.max_new_tokens < 1:
            raise dpo_plugin.ConfigError("length_growth: max_ratio must be > 0 and max_new_tokens >= 1.")


def mean_words(texts):
    return sum(len(text.split()) for text in texts) / max(len(texts), 1)


def length_growth(ctx, **params):
    """The policy's answers are at most ``max_ratio`` times as long (in words) as the reference's."""
    settings = LengthGrowthSettings(**params)
    prompts = ctx.prompts[: settings.max_prompts] if settings.max_prompts else ctx.prompts
    if not prompts:
        return dpo_plugin.CheckResult("length_growth", False, skipped="no held-out prompts")
    options = dict(max_new_tokens=settings.max_new_tokens, seed=ctx.seed)
    policy = generate(ctx.policy, ctx.tokenizer, prompts, **options).texts
    with ctx.reference_model() as reference_model:
        if reference_model is None:
            return dpo_plugin.CheckResult("length_growth", False, skipped="no reference model to compare with")
        reference = generate(reference_model, ctx.tokenizer, prompts, **options).texts
    ratio = mean_words(policy) / max(mean_words(reference), 1.0)
    return dpo_plugin.CheckResult(
        "length_growth",
        ratio <= settings.max_ratio,
        {"ratio": ratio, "policy_words": mean_words(policy), "reference_words": mean_words(reference)},
        threshold=settings.max_ratio,
        details={
            "headline": "ratio",
            "samples": [
                {"prompt": str(p), "reference": r, "policy": a, "verdict": ""}
                for p, r, a in zip(prompts[:5], reference, policy)
            ],
        },
    )


@dpo_plugin.hookimpl
def register_checks(register):
    register("length_growth", length_growth, settings=LengthGrowthSettings)

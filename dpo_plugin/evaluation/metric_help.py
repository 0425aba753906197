"""One line per metric of the built-in checks: report.md's explanations and the docs' metric table both come from here.

A third-party check explains its own metrics in ``details["metric_help"]`` (metric → one line).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

METRIC_HELP: dict[str, dict[str, str]] = {
    "win_rate": {
        "n": "prompts with a verdict in both orders (wins + ties + disagreements + losses)",
        "wins": "prompts where both orders prefer the policy",
        "losses": "prompts where both orders prefer the reference",
        "ties": "prompts where both orders tie (½ each)",
        "disagreements": "prompts where the two orders differ (½ each): position inconsistency, not a real tie",
        "failures": "prompts with a failed or invalid verdict in either order (never a win)",
        "invalid_verdicts": 'values that were not 0, 0.5, 1 or None (True, "1", 2, …); examples in judge_errors',
        "win_rate": "(wins + ½·(ties + disagreements)) / n, failures left out",
        "low": "lower end of the win rate's tie-aware 95% interval (the check's interval)",
        "high": "upper end of the win rate's tie-aware 95% interval",
        "tie_rate": "ties / n",
        "disagreement_rate": "disagreements / n",
        "failure_rate": "failures / all prompts (at most max_failure_rate)",
        "p_value": "two-sided sign test of wins against losses, failures left out",
        "conservative_win_rate": "the win rate with failures counted as losses: what the decision uses",
        "conservative_low": "lower end of its interval; must exceed threshold",
        "conservative_high": "upper end of its interval",
        "conservative_p_value": "one-sided test of score ≤ threshold, failures as losses; must be < (1 − confidence)/2",
        "position_bias": "share of the judge's 0/1 verdicts that pick the answer shown first (0.5 = unbiased)",
        "position_bias_p_value": "sign test of prompts favouring the first shown against the second; < 0.05 warns",
        "empty_policy": "empty completions of the policy",
        "empty_reference": "empty completions of the reference",
        "kl_estimate": "mean per-token log π/π_ref on the policy's sampled completions: a KL(π‖π_ref) estimate",
        "logratio_greedy": "mean per-token log π/π_ref on the policy's greedy completions (not a KL estimate)",
        "lc_win_rate": "length-controlled win rate σ(θ): the fit of score on θ + φ·tanh(Δ/sd) predicted at Δ = 0 "
        "(AlpacaEval 2); null when not estimable",
        "lc_low": "lower end of its 95% interval (sandwich standard error of θ); "
        "what length_controlled: true decides on",
        "lc_high": "upper end of the length-controlled win rate's 95% interval",
        "conservative_lc_win_rate": "the length-controlled win rate with judge failures counted as losses",
        "conservative_lc_low": "lower end of its interval; must exceed threshold when length_controlled: true",
        "length_coefficient": "φ: the judge's preference per unit of tanh(Δ/sd) in log-odds "
        "(> 0: it favours the longer answer)",
        "length_coefficient_se": "standard error of φ (sandwich)",
        "se_inflation": "θ's standard error with the length term over without it; "
        "above 2: length and preference confounded",
        "confounded": "length and preference cannot be told apart "
        "(se_inflation > 2, or the length alone predicts the verdicts): "
        "the LC estimate is unstable and cannot pass",
        "lc_n": "prompts in the length-controlled fit (verdicts in both orders); it needs at least 30",
        "lc_passed": "whether the length-controlled verdict passes (decides the check with length_controlled: true)",
        "mean_length_policy": "mean length of the policy's answers (tokens, EOS not counted)",
        "mean_length_reference": "mean length of the reference's answers (tokens, EOS not counted)",
        "mean_length_difference": "mean of Δ = policy − reference answer length (tokens)",
        "length_difference_sd": "sd of Δ: the scale of tanh(Δ/sd) in the length model",
        "policy_longer_share": "share of prompts where the policy's answer is longer than the reference's",
        "unfinished_policy": "share of the policy's answers that hit max_new_tokens without EOS",
        "unfinished_reference": "share of the reference's answers that hit max_new_tokens without EOS",
        "repetition_policy": "mean share of repeated 4-grams in the policy's answers (1 − distinct/total)",
        "repetition_reference": "mean share of repeated 4-grams in the reference's answers",
    },
    "degeneration": {
        "n": "prompts both models answered",
        "unfinished_policy": "share of the policy's answers that hit max_new_tokens without EOS",
        "unfinished_reference": "share of the reference's answers that hit max_new_tokens without EOS",
        "unfinished_difference": "mean of the per-prompt differences policy − reference in unfinished answers",
        "unfinished_low": "lower end of its 95% interval (t ∪ bootstrap-t); above 0 and a difference above "
        "max_unfinished_increase fails",
        "unfinished_high": "upper end of its 95% interval",
        "repetition_policy": "mean repetition rate of the policy's answers: 1 − distinct/total n-grams (seq-rep-n)",
        "repetition_reference": "mean repetition rate of the reference's answers",
        "repetition_difference": "mean of the per-prompt differences policy − reference in repetition rate",
        "repetition_low": "lower end of its 95% interval; above 0 and a difference above max_repetition_increase fails",
        "repetition_high": "upper end of its 95% interval",
    },
    "reward_margin": {
        "n": "held-out pairs with a finite margin",
        "nonfinite": "held-out pairs whose margin is not finite (left out)",
        "accuracy": "share of pairs with r_w > r_l (ties are not wins)",
        "low": "lower end of the accuracy's Wilson 95% interval (the check's interval); must exceed threshold",
        "high": "upper end of the accuracy's Wilson 95% interval",
        "accuracy_p_value": "exact binomial test of accuracy > threshold, one-sided",
        "margin_mean": "mean reward margin r_w − r_l, r = β·log π/π_ref",
        "margin_low": "lower end of the mean margin's interval; must be above 0",
        "margin_high": "upper end of the mean margin's interval",
        "chosen_reward_mean": "mean implicit reward of the chosen answers (falling: DPO's known failure)",
        "rejected_reward_mean": "mean implicit reward of the rejected answers",
        "drift_chosen": "mean per-token log-ratio policy/reference on the chosen answers",
        "drift_rejected": "mean per-token log-ratio policy/reference on the rejected answers",
    },
}


def explain(check: str, metric: str, details: Mapping[str, Any] | None = None) -> str:
    """The one-line meaning of ``metric`` of ``check`` (the check's own ``details["metric_help"]`` first);
    "" if none."""
    own = (details or {}).get("metric_help") or {}
    return str(own.get(metric) or METRIC_HELP.get(check, {}).get(metric, ""))

"""The length-controlled (LC) win rate: the win rate the policy would have if its answers were as long as the
reference's.

Judges prefer longer answers, and DPO teaches the policy to answer longer, so a raw win rate can be
length alone. AlpacaEval 2 controls for it (Dubois et al. 2024, "Length-Controlled AlpacaEval",
arXiv 2404.04475): a logistic model of the per-prompt preference on θ + φ·tanh(Δ/sd(Δ)), Δ the length
of the policy's answer minus the reference's (tokens), predicted at Δ = 0 and averaged over the
prompts; with no other term in the model that average is σ(θ).

Here the preference is the per-prompt score of :mod:`.verdicts` (1 a win in both orders, 0 a loss,
½ a tie or a disagreement), fitted as a quasi-binomial GLM (fractional responses, Papke & Wooldridge
1996) by statsmodels (it takes fractional responses and gives the sandwich covariance; scikit-learn's
logistic regression needs class labels and gives no standard errors), with ½ pseudo-win and ½
pseudo-loss at Δ = 0: Jeffreys' prior on the intercept, which keeps θ finite when every prompt is won
(the fit without length then gives (S + ½)/(n + 1)). Interval: θ̂ ± t·se, Student's t on ñ − 2
degrees of freedom (ñ = n + 1), se the HC1 sandwich standard error (Huber 1967; White 1980; HC0 ×
ñ/(ñ − 2), MacKinnon & White 1985), which does not assume a binomial variance for ½ scores; mapped
through σ. Measured in ``benchmarks/simulate_length_control.py``: coverage ≥ 0.93 from n = 30
(z²/2 pseudo-counts, as the raw interval's, covered only 0.88 at a true LC of 0.85).

*Confounded*: the data cannot tell length from quality apart, so the LC estimate is unstable. Detected
when controlling for length inflates θ's standard error more than :data:`MAX_SE_INFLATION` times over
the same fit without the length term (e.g. the policy's answers are longer on nearly every prompt, so
Δ = 0 lies outside the data): the estimate is reported, with a warning, and never passes. Or when the
length term separates the verdicts (|φ̂| > :data:`MAX_LENGTH_COEFFICIENT` or a non-finite standard
error: a judge the length alone predicts): the fit diverges, so the LC win rate is not estimable.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from scipy.special import expit

from .verdicts import FAILURE_CELL, LOSS_CELL, WIN_CELL, _check_settings, _read_cells

#: Fewer usable prompts than this and the LC win rate is not estimated (measured: coverage ≥ 0.93 from here).
MIN_PROMPTS = 30
#: θ's standard error with the length term over without it, above which length and preference are confounded.
MAX_SE_INFLATION = 2.0
#: |φ̂| above this: the length term separates the verdicts (e^10 in odds across the range of tanh).
MAX_LENGTH_COEFFICIENT = 10.0
#: Pseudo-wins and pseudo-losses added at Δ = 0 (Jeffreys' Beta(½, ½) prior on the intercept).
PSEUDO_COUNT = 0.5


@dataclass(frozen=True)
class LengthFit:
    """One fit of the LC model: σ(θ̂) with its interval, φ̂ with its standard error, and the confounding signs."""

    win_rate: float
    low: float
    high: float
    coefficient: float
    coefficient_se: float
    se_inflation: float
    separated: bool

    @property
    def confounded(self) -> bool:
        return self.separated or not self.se_inflation <= MAX_SE_INFLATION


def length_feature(policy_lengths: Sequence[float], reference_lengths: Sequence[float]) -> tuple[np.ndarray, float]:
    """x = tanh(Δ/sd(Δ)) per prompt with Δ = policy − reference length, and sd(Δ) (ddof 1); x = 0 where sd = 0."""
    policy, reference = (np.asarray(v, dtype=float) for v in (policy_lengths, reference_lengths))
    if policy.shape != reference.shape or policy.ndim != 1:
        raise ValueError(f"Need one length per prompt for each side; got shapes {policy.shape} and {reference.shape}.")
    if (
        not (np.all(np.isfinite(policy)) and np.all(np.isfinite(reference)))
        or np.any(policy < 0)
        or np.any(reference < 0)
    ):
        raise ValueError("Answer lengths must be finite numbers >= 0 (token counts).")
    delta = policy - reference
    sd = float(delta.std(ddof=1)) if delta.size > 1 else 0.0
    return (np.tanh(delta / sd) if sd > 0 else np.zeros_like(delta)), sd


def _glm(scores: np.ndarray, columns: list[np.ndarray]) -> Any:
    """The quasi-binomial GLM of ``scores`` on an intercept and ``columns``, with the pseudo-counts at 0 (HC0)."""
    import statsmodels.api as sm

    design = np.column_stack([np.ones(scores.size + 2)] + [np.append(c, [0.0, 0.0]) for c in columns])
    weights = np.append(np.ones(scores.size), [PSEUDO_COUNT, PSEUDO_COUNT])
    with warnings.catch_warnings():  # separation: overflow and NaN standard errors, detected from the result
        warnings.simplefilter("ignore")
        family = sm.families.Binomial()
        return sm.GLM(np.append(scores, [1.0, 0.0]), design, family=family, freq_weights=weights).fit(cov_type="HC0")


def fit_length_model(scores: Sequence[float], x: Sequence[float], confidence: float = 0.95) -> LengthFit:
    """Fit the LC model to per-prompt ``scores`` (0, ½, 1) and length features ``x`` (:func:`length_feature`).

    ``win_rate`` = σ(θ̂), [``low``, ``high``] = σ(θ̂ ∓ t·se(θ̂)), ``coefficient`` = φ̂ (see the module);
    ``se_inflation`` = se(θ̂) over the intercept's in the same fit without the length term. With x all
    0 (every length difference equal) only the intercept is fitted and φ̂ is NaN.
    """
    scores, x = np.asarray(scores, dtype=float), np.asarray(x, dtype=float)
    n_tilde = scores.size + 2 * PSEUDO_COUNT
    quantile = float(stats.t.ppf(0.5 + confidence / 2, n_tilde - 2))
    plain = _glm(scores, [])
    varies = bool(np.any(x != 0))
    result = _glm(scores, [x]) if varies else plain
    hc1 = math.sqrt(n_tilde / (n_tilde - 2))
    theta, se = float(result.params[0]), float(result.bse[0]) * hc1
    coefficient = float(result.params[1]) if varies else math.nan
    coefficient_se = float(result.bse[1]) * hc1 if varies else math.nan
    finite = math.isfinite(se) and math.isfinite(coefficient_se if varies else 0.0)
    separated = not finite or (varies and abs(coefficient) > MAX_LENGTH_COEFFICIENT)
    inflation = se / (float(plain.bse[0]) * hc1) if finite and plain.bse[0] > 0 else math.inf
    low, high = (float(expit(theta + sign * quantile * se)) if finite else math.nan for sign in (-1, 1))
    return LengthFit(float(expit(theta)), low, high, coefficient, coefficient_se, inflation, separated)


def _scores(cells: Sequence[int], failures_as_losses: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt scores (1 win, 0 loss, ½ otherwise) and which prompts they are: failures left out, or as losses."""
    cells = np.asarray(cells, dtype=int)
    scores = np.where(cells == WIN_CELL, 1.0, np.where(cells == LOSS_CELL, 0.0, 0.5))
    failed = cells == FAILURE_CELL
    if failures_as_losses:
        return np.where(failed, 0.0, scores), np.ones(cells.size, dtype=bool)
    return scores[~failed], ~failed


SEPARATES = (
    "the length difference alone predicts the verdicts (on one side of some length difference the policy always "
    "wins, on the other it never does), so the length model's fit diverges: length and preference are confounded"
)


def _not_estimable(n: int, delta: np.ndarray) -> str | None:
    """Why the LC win rate cannot be estimated from these prompts (None when it can)."""
    if n < MIN_PROMPTS:
        return (
            f"only {n} prompts have a verdict in both orders; "
            f"the length-controlled win rate needs at least {MIN_PROMPTS}"
        )
    if delta.size and np.all(delta == delta[0]) and delta[0] != 0:
        return (
            f"the policy's answers are {delta[0]:+g} tokens longer than the reference's on every prompt, so no prompt "
            "shows how the judge rates answers of equal length"
        )
    return None


def _length_summary(policy: np.ndarray, reference: np.ndarray, sd: float) -> dict[str, Any]:
    """Both sides' mean answer length, the length differences' spread, and how often the policy answered longer."""
    delta = policy - reference
    return {
        "mean_length_policy": float(policy.mean()) if policy.size else math.nan,
        "mean_length_reference": float(reference.mean()) if reference.size else math.nan,
        "mean_length_difference": float(delta.mean()) if delta.size else math.nan,
        "length_difference_sd": sd,
        "policy_longer_share": float(np.mean(delta > 0)) if delta.size else math.nan,
    }


def _lc_reasons(out: dict[str, Any], threshold: float, max_failure_rate: float) -> list[str]:
    """Why the LC verdict did not pass, one sentence per failed condition."""
    if out["lc_not_estimable"]:
        return [f"the length-controlled win rate is not estimable: {out['lc_not_estimable']}"]
    reasons = []
    if out["failure_rate"] > max_failure_rate:
        reasons.append(f"the judge failed on {out['failure_rate']:.0%} of prompts (max {max_failure_rate:.0%})")
    if out["confounded"]:
        reasons.append(
            f"length and preference are confounded (the length term inflates the standard error "
            f"{out['se_inflation']:.1f}×), so the length-controlled estimate cannot tell length from quality"
        )
    counted = f"with the {out['failures']} judge failures counted as losses, " if out["failures"] else ""
    if not out["confounded"] and not out["conservative_lc_low"] > threshold:
        reasons.append(
            f"{counted}the length-controlled interval's lower bound {out['conservative_lc_low']:.3f} does not exceed "
            f"the threshold {threshold}"
        )
    return reasons


def length_controlled_verdict(
    policy_first: Sequence[Any],
    policy_second: Sequence[Any],
    policy_lengths: Sequence[float],
    reference_lengths: Sequence[float],
    *,
    threshold: float = 0.5,
    confidence: float = 0.95,
    max_failure_rate: float = 0.1,
) -> dict[str, Any]:
    """The length-controlled win-rate decision from a judge's verdicts in both orders and both sides' answer lengths.

    Verdicts as for :func:`~.verdicts.win_rate_verdict` (0: the first shown is better, 1: the second, 0.5:
    a tie, None: a failure); ``policy_lengths[i]``, ``reference_lengths[i]``: the token lengths of the two
    answers to prompt i. Returns ``lc_win_rate`` with ``lc_low``, ``lc_high`` (failures left out; None when
    not estimable, with the reason in ``lc_not_estimable``), ``length_coefficient`` φ̂ and its
    ``length_coefficient_se``, ``confounded`` (see the module), ``se_inflation``, the decision's
    ``conservative_lc_win_rate`` and ``conservative_lc_low`` (failures as losses), the lengths' summary, ``passed``
    and ``reasons``. Passes when estimable, failures ≤ ``max_failure_rate``, not confounded, and the
    conservative lower bound exceeds ``threshold``.
    """
    _check_settings(threshold, confidence, max_failure_rate=max_failure_rate)
    cells, _ = _read_cells(policy_first, policy_second)
    x, sd = length_feature(policy_lengths, reference_lengths)
    if x.size != len(cells):
        raise ValueError(f"{len(cells)} prompts have verdicts but {x.size} have answer lengths.")
    policy, reference = np.asarray(policy_lengths, dtype=float), np.asarray(reference_lengths, dtype=float)
    scores, usable = _scores(cells, failures_as_losses=False)
    failures = int(np.sum(~usable))
    out: dict[str, Any] = {
        "lc_n": int(scores.size),
        "failures": failures,
        "failure_rate": failures / len(cells) if cells else math.nan,
    }
    out |= _length_summary(policy, reference, sd)
    out["lc_not_estimable"] = _not_estimable(scores.size, (policy - reference)[usable])
    out |= _fits(cells, x, usable, scores, confidence) if out["lc_not_estimable"] is None else _empty_fits()
    if out["length_separates"]:  # the fit diverged: its numbers are artefacts, not estimates
        out |= _empty_fits(confounded=True) | {"lc_not_estimable": SEPARATES}
    out["reasons"] = _lc_reasons(out, threshold, max_failure_rate)
    out["passed"] = not out["reasons"]
    return out


def _fits(
    cells: Sequence[int], x: np.ndarray, usable: np.ndarray, scores: np.ndarray, confidence: float
) -> dict[str, Any]:
    """The LC model fitted on the usable prompts, and (when the judge failed somewhere) with failures as losses."""
    fit = fit_length_model(scores, x[usable], confidence)
    conservative = fit if usable.all() else fit_length_model(_scores(cells, failures_as_losses=True)[0], x, confidence)
    return {
        "lc_win_rate": fit.win_rate,
        "lc_low": fit.low,
        "lc_high": fit.high,
        "length_coefficient": fit.coefficient,
        "length_coefficient_se": fit.coefficient_se,
        "se_inflation": fit.se_inflation,
        "length_separates": fit.separated or conservative.separated,
        "confounded": fit.confounded or conservative.confounded,
        "conservative_lc_win_rate": conservative.win_rate,
        "conservative_lc_low": conservative.low,
    }


def _empty_fits(confounded: bool = False) -> dict[str, Any]:
    """The fit's keys when the LC win rate is not estimable: no numbers (``confounded`` when the length separates)."""
    keys = ("lc_win_rate", "lc_low", "lc_high", "length_coefficient", "length_coefficient_se", "se_inflation")
    return dict.fromkeys(keys + ("conservative_lc_win_rate", "conservative_lc_low")) | {
        "confounded": confounded,
        "length_separates": confounded,
    }

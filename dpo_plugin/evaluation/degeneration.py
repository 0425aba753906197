"""Degenerate answers, policy against reference: answers that never end, answers that repeat themselves.

What DPO users report after length (TRL issue 1884): a policy that no longer stops, or loops. Per answer:

- *unfinished*: it stopped at ``max_new_tokens`` without emitting EOS (1) or ended (0);
- *repetition*: the share of its token n-grams that repeat an earlier n-gram of the same answer,
  1 − distinct/total (seq-rep-n of Welleck et al. 2020, "Neural Text Generation with Unlikelihood
  Training", arXiv 1908.04319; n = 4), 0 for an answer with no n-gram.

Both sides answer the same prompts, so each measure is compared per prompt: the mean of the paired
differences policy − reference with the interval of :func:`~.statistics.mean_interval` (the union of
Student's t and the bootstrap-t; one value when every difference is equal). :func:`degeneration_verdict`
fails when the policy is worse on a measure by more than its threshold and the interval lies above 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .generation import Generations
from .statistics import check_confidence, mean_interval

MEASURES = ("unfinished", "repetition")
DESCRIPTIONS = {
    "unfinished": "share of answers that hit max_new_tokens without EOS",
    "repetition": "mean repetition rate (repeated n-grams)",
}
NGRAM = 4


def repetition_rate(ids: Sequence[int], n: int = NGRAM) -> float:
    """1 − distinct/total over the token n-grams of one answer (0 when it has fewer than n tokens)."""
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def answer_measures(generations: Generations, max_new_tokens: int, n: int = NGRAM) -> dict[str, np.ndarray]:
    """Per answer: ``unfinished`` (1 when it hit ``max_new_tokens`` without EOS) and ``repetition``
    (:func:`repetition_rate`)."""
    unfinished = [
        float(not done and len(ids) >= max_new_tokens)
        for ids, done in zip(generations.completion_ids, generations.finished)
    ]
    repetition = [
        repetition_rate(ids[:length], n) for ids, length in zip(generations.completion_ids, generations.lengths)
    ]
    return {"unfinished": np.array(unfinished), "repetition": np.array(repetition)}


def _compare(policy: np.ndarray, reference: np.ndarray, confidence: float, seed: int) -> dict[str, float]:
    """Both sides' means, the mean paired difference and its interval."""
    difference = policy - reference
    low, high = mean_interval(difference, confidence, seed=seed) if difference.size else (math.nan, math.nan)
    if difference.size and np.all(difference == difference[0]):
        low = high = float(difference[0])  # no spread: the interval is the value itself
    return {
        "policy": float(policy.mean()) if policy.size else math.nan,
        "reference": float(reference.mean()) if reference.size else math.nan,
        "difference": float(difference.mean()) if difference.size else math.nan,
        "low": float(low),
        "high": float(high),
    }


def degeneration_verdict(
    policy: dict[str, Sequence[float]],
    reference: dict[str, Sequence[float]],
    *,
    max_unfinished_increase: float = 0.1,
    max_repetition_increase: float = 0.1,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``degeneration`` decision from per-answer measures (:func:`answer_measures`)
    of both sides on the same prompts.

    Returns ``n``, per measure ``<measure>_policy``, ``<measure>_reference`` (means), ``<measure>_difference``
    (mean of policy − reference) with ``<measure>_low``, ``<measure>_high``; ``passed`` and ``reasons``.
    Fails on a measure whose difference exceeds its ``max_<measure>_increase`` with the lower bound above 0.
    """
    check_confidence(confidence)
    limits = {"unfinished": max_unfinished_increase, "repetition": max_repetition_increase}
    if any(not 0 <= limit <= 1 for limit in limits.values()):
        raise ValueError(f"max_unfinished_increase and max_repetition_increase must lie in [0, 1], got {limits}.")
    out: dict[str, Any] = {}
    reasons = []
    for measure in MEASURES:
        ours, theirs = (np.asarray(side[measure], dtype=float) for side in (policy, reference))
        if ours.shape != theirs.shape or ours.ndim != 1:
            raise ValueError(
                f"{measure}: need one value per prompt for each side, got {ours.shape} and {theirs.shape}."
            )
        compared = _compare(ours, theirs, confidence, seed)
        out["n"] = int(ours.size)
        out |= {f"{measure}_{key}": value for key, value in compared.items()}
        if compared["difference"] > limits[measure] and compared["low"] > 0:
            reasons.append(
                f"the policy's {DESCRIPTIONS[measure]} exceeds the reference's by {compared['difference']:.3f} "
                f"[{compared['low']:.3f}, {compared['high']:.3f}] (max {limits[measure]})"
            )
    return {"passed": not reasons, **out, "reasons": reasons}

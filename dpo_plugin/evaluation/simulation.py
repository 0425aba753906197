"""Simulated judges of known behaviour, to measure the win-rate decision (``benchmarks/simulate_verdicts.py``, tests).

A judge kind gives the probability of each prompt's cell (its two verdicts, see :mod:`.verdicts`) from
one judgement's view of the answers: ``prefer`` = P(it finds the policy's answer better), ``tie`` =
P(it finds them equal), the reference's answer better otherwise.

- ``consistent``: both orders give the same view (no disagreements);
- ``independent``: the two orders are independent judgements;
- ``correlated``: the second order repeats the first's view with probability ``correlation``, else
  it is independent;
- ``position``: independent orders, each of which picks the answer shown first with probability
  ``first_bias`` whatever the answers (with ``first_bias=0.6`` and no preference, 80% first picks).

``failures``: that share of the prompts moves from would-be losses to judge failures (a judge that
times out on long, bad answers), the case that must not fake a pass.

:class:`LengthJudge` and :func:`simulate_lengths` add answer lengths, for the length-controlled win rate
(``benchmarks/simulate_length_control.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import optimize, special, stats

from .verdicts import FAILURE_CELL, LOSS_CELL, TIE_CELL, WIN_CELL, Tally

Kind = Literal["consistent", "independent", "correlated", "position"]
KINDS: tuple[Kind, ...] = ("consistent", "independent", "correlated", "position")
#: A prompt's score per valid cell: 1 a win, 0 a loss, ½ a tie or a disagreement.
SCORES = np.array([1.0 if c == WIN_CELL else 0.0 if c == LOSS_CELL else 0.5 for c in range(FAILURE_CELL)])


def cell_probabilities(
    kind: Kind,
    prefer: float,
    tie: float = 0.0,
    *,
    correlation: float = 0.5,
    first_bias: float = 0.6,
    failures: float = 0.0,
) -> np.ndarray:
    """P(cell) for the ``CELLS`` cells of one prompt judged in both orders by a judge of ``kind`` (see the module)."""
    reference = 1 - prefer - tie
    bias = first_bias if kind == "position" else 0.0
    # P(verdict 0, 0.5, 1): with the policy shown first, 0 picks the policy; shown second, 0 picks the reference
    first = np.array([bias + (1 - bias) * prefer, (1 - bias) * tie, (1 - bias) * reference])
    second = np.array([bias + (1 - bias) * reference, (1 - bias) * tie, (1 - bias) * prefer])
    consistent = np.zeros(FAILURE_CELL)
    consistent[[WIN_CELL, TIE_CELL, LOSS_CELL]] = prefer, tie, reference
    repeat = {"consistent": 1.0, "correlated": correlation}.get(kind, 0.0)
    cells = np.append(repeat * consistent + (1 - repeat) * np.outer(first, second).ravel(), 0.0)
    if failures > cells[LOSS_CELL] + 1e-12:
        raise ValueError(f"failures={failures} exceed the would-be losses {cells[LOSS_CELL]:.3f}.")
    cells[LOSS_CELL] -= failures
    cells[FAILURE_CELL] = failures
    return cells


def expected_score(cells: np.ndarray) -> float:
    """The mean score of the prompts the judge did not fail on: the quantity the win-rate interval estimates."""
    valid = cells[:FAILURE_CELL]
    return float(valid @ SCORES / valid.sum())


def prefer_for_score(kind: Kind, score: float, tie: float = 0.0, **options: float) -> float:
    """The ``prefer`` at which a judge of ``kind`` (and ``tie``, options) has expected score ``score``
    (Brent's root)."""

    def gap(prefer: float) -> float:
        return expected_score(cell_probabilities(kind, prefer, tie, **options)) - score

    return float(optimize.brentq(gap, 0.0, 1.0 - tie, xtol=1e-13))


def judge_cells(kind: Kind, tie: float, scores: Sequence[float], **options: float) -> tuple[np.ndarray, np.ndarray]:
    """The cell probabilities ``[k, CELLS]`` of the judge at those k of ``scores`` it can reach, and those scores."""
    low, high = (expected_score(cell_probabilities(kind, p, tie, **options)) for p in (0.0, 1.0 - tie))
    reachable = [s for s in scores if low + 1e-9 < s < high - 1e-9]
    cells = [cell_probabilities(kind, prefer_for_score(kind, s, tie, **options), tie, **options) for s in reachable]
    return np.array(cells).reshape(-1, FAILURE_CELL + 1), np.array(reachable)


def outcomes(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (wins, halves, losses) of n prompts without failures, as three arrays of (n + 1)(n + 2)/2 counts."""
    wins, halves = (a.ravel() for a in np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij"))
    keep = wins + halves <= n
    return wins[keep], halves[keep], n - wins[keep] - halves[keep]


def outcome_probabilities(n: int, cells: np.ndarray) -> np.ndarray:
    """P(each of the :func:`outcomes` of n prompts) for judges without failures:
    ``cells`` ``[..., CELLS]`` → ``[G, ...]``.

    (wins, halves, losses) ~ Multinomial(n; P(win), P(tie or disagreement), P(loss)): halves are ties
    and disagreements, which the decision does not tell apart. Sums over these give exact pass rates
    and coverages.
    """
    cells = np.asarray(cells, dtype=float)
    if np.any(cells[..., FAILURE_CELL] > 0):
        raise ValueError("outcome_probabilities is for judges without failures; simulate those with simulate_tally.")
    win, loss = cells[..., WIN_CELL], cells[..., LOSS_CELL]
    p = np.stack([win, np.clip(1.0 - win - loss, 0.0, 1.0), loss], axis=-1)
    counts = np.stack(outcomes(n), axis=-1).reshape((-1,) + (1,) * (p.ndim - 1) + (3,))
    return stats.multinomial.pmf(counts, n, p / p.sum(axis=-1, keepdims=True))


def simulate_tally(n: int, cells: np.ndarray, replications: int, rng: np.random.Generator) -> Tally:
    """The tallies of ``replications`` independent runs of n prompts (multinomial cell counts)."""
    return Tally.from_cells(rng.multinomial(n, cells / cells.sum(), size=replications))


@dataclass(frozen=True)
class LengthJudge:
    """A simulated judge that sees quality and length, for the length-controlled win rate (:mod:`.length_control`).

    Per prompt and order it finds the policy's answer better with probability p(Δ) = σ(logit(``lc``) +
    ``length_effect``·tanh(Δ/``scale``)), Δ the policy's answer length minus the reference's (tokens);
    ``length_effect=inf`` prefers the longer answer and nothing else (a coin flip at Δ = 0). ``kind``:
    ``consistent`` (both orders share one view) or ``independent``. ``tie``: that share of views are
    ties, taken from both sides so that the mean score stays p(Δ) (at most 2·min(p, 1 − p)). For these
    judges the expected per-prompt score at Δ = 0 is ``lc``: the truth the LC win rate estimates.
    """

    lc: float
    length_effect: float
    kind: Literal["consistent", "independent"] = "consistent"
    tie: float = 0.0
    scale: float = 40.0

    def prefer(self, delta: np.ndarray) -> np.ndarray:
        """p(Δ): the probability of one view finding the policy's answer better."""
        if math.isinf(self.length_effect):
            return np.where(delta > 0, 1.0, np.where(delta < 0, 0.0, self.lc))
        return special.expit(special.logit(self.lc) + self.length_effect * np.tanh(delta / self.scale))

    def verdicts(self, delta: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Verdicts with the policy shown first and second (0: the first shown is better, 1: the second, 0.5: a tie)."""
        p = self.prefer(delta)
        tie = np.minimum(self.tie, 2 * np.minimum(p, 1 - p))
        views = []  # +1 the policy's answer is better, 0 a tie, −1 the reference's
        for _ in range(1 if self.kind == "consistent" else 2):
            u = rng.random(delta.shape)
            views.append(np.where(u < p - tie / 2, 1, np.where(u < p + tie / 2, 0, -1)))
        second = views[-1]
        return (1 - views[0]) / 2, (1 + second) / 2


def simulate_lengths(
    n: int,
    mean_difference: float,
    rng: np.random.Generator,
    *,
    sd_difference: float = 40.0,
    reference_mean: float = 150.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Token lengths of n answer pairs: the reference's ~ N(``reference_mean``, 40),
    the policy's longer by ~ N(``mean_difference``, ``sd_difference``), each ≥ 1."""
    reference = np.maximum(np.round(rng.normal(reference_mean, 40.0, n)), 1.0)
    policy = np.maximum(reference + np.round(rng.normal(mean_difference, sd_difference, n)), 1.0)
    return policy, reference

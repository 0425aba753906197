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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import optimize, stats

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
    """The ``prefer`` at which a judge of ``kind`` (and ``tie``, options) has expected score ``score`` (Brent's root)."""

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
    """P(each of the :func:`outcomes` of n prompts) for judges without failures: ``cells`` ``[..., CELLS]`` → ``[G, ...]``.

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

"""The checks' verdicts on simulated judges and margins of known behaviour: coverage, width, false passes, power.

Win rate (judge kinds of :mod:`dpo_plugin.evaluation.simulation`): the coverage and width of the
interval, the pass rate at a true score equal to the threshold and the power above it are exact sums
over every outcome of n prompts; judges that fail on would-be losses and the position-bias test are
simulated (``--replications``). Reward margin: coverage and width of the mean-margin intervals on
normal, t3 and log-normal margins, simulated. Prints the Markdown tables recorded in
docs/checks-and-judges.md.

    cd benchmarks && ../.venv/bin/python simulate_verdicts.py            # about 2 minutes on 2 cores
    ../.venv/bin/python simulate_verdicts.py --quick                     # fewer n and replications, seconds
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

from dpo_plugin.evaluation.simulation import (
    KINDS,
    SCORES,
    cell_probabilities,
    judge_cells,
    outcome_probabilities,
    outcomes,
    prefer_for_score,
    simulate_tally,
)
from dpo_plugin.evaluation.statistics import (
    bootstrap_t_interval,
    mean_interval,
    score_interval,
    sign_test,
    t_interval,
)
from dpo_plugin.evaluation.verdicts import FAILURE_CELL, decide_win_rate

Interval = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
Decide = Callable[..., np.ndarray]
TIES = (0.0, 0.3, 0.6, 0.87)


def judges(ties: Sequence[float] = TIES) -> list[tuple[str, float]]:
    """(kind, tie) pairs; the position-biased judge (60% first picks beyond its view) only with few ties."""
    return [(kind, tie) for kind in KINDS for tie in ties if kind != "position" or tie <= 0.3]


def new_decision(wins, halves, losses, failures, threshold: float = 0.5) -> np.ndarray:
    """The check's decision (max_failure_rate 0.1, confidence 0.95)."""
    return decide_win_rate(wins, halves, losses, failures, threshold=threshold, max_failure_rate=0.1, confidence=0.95)[
        "passed"
    ]


def coverage_rows(ns: Sequence[int], interval: Interval = score_interval) -> list[str]:
    """Per judge: the least exact coverage over true scores 0.02 … 0.98 and n in each range; at n = 40 the mean
    width and its ratio to the ideal 2·z·σ/√n (σ the true per-prompt standard deviation), averaged over the scores."""
    ranges = [(10, 19), (20, 40), (41, 100), (101, 400)]
    rows = [
        "| judge | ties | "
        + " | ".join(f"min coverage n={a}–{b}" for a, b in ranges)
        + " | mean width (n=40) | width / ideal (n=40) |",
        "|---|---|" + "---|" * (len(ranges) + 2),
    ]
    scores = np.round(np.arange(0.02, 0.99, 0.02), 2)
    z = stats.norm.ppf(0.975)
    for kind, tie in judges():
        cells, mu = judge_cells(kind, tie, scores)
        worst = {r: (1.0, 0, 0.0) for r in ranges}
        widths = "- | -"
        for n in ns:
            wins, halves, losses = outcomes(n)
            low, high = interval(wins, halves, losses)
            pmf = outcome_probabilities(n, cells)
            covered = (low[:, None] <= mu + 1e-12) & (mu - 1e-12 <= high[:, None])
            coverage = (pmf * covered).sum(axis=0)
            r = next(r for r in ranges if r[0] <= n <= r[1])
            i = int(coverage.argmin())
            worst[r] = min(worst[r], (float(coverage[i]), n, float(mu[i])))
            if n == 40:
                width = (high - low) @ pmf
                ideal = 2 * z * np.sqrt(cells[:, :FAILURE_CELL] @ SCORES**2 - mu**2) / np.sqrt(n)
                widths = f"{np.mean(width):.3f} | {np.mean(width / ideal):.2f}"
        cells_text = " | ".join(f"{c:.3f} (n={n}, μ={m:.2f})" for c, n, m in worst.values())
        rows.append(f"| {kind} | {tie:.2f} | {cells_text} | {widths} |")
    return rows


def false_pass_rows(ns: Sequence[int], threshold: float = 0.5, decide: Decide = new_decision) -> list[str]:
    """Per judge at a true score equal to the threshold: the largest exact pass rate over n, where,
    and how many n exceed 2.5%."""
    rows = ["| judge | ties | max false-pass | at n | n with > 2.5% |", "|---|---|---|---|---|"]
    rates = {}
    for n in ns:
        wins, halves, losses = outcomes(n)
        passed = decide(wins, halves, losses, np.zeros_like(wins), threshold=threshold)
        for kind, tie in judges():
            cells, reachable = judge_cells(kind, tie, [threshold])
            if not reachable.size:
                continue
            rates.setdefault((kind, tie), []).append(float(passed @ outcome_probabilities(n, cells)[:, 0]))
    for (kind, tie), rate in rates.items():
        i = int(np.argmax(rate))
        rows.append(f"| {kind} | {tie:.2f} | {rate[i]:.4f} | {ns[i]} | {sum(r > 0.025 for r in rate)} of {len(ns)} |")
    return rows


def failure_rows(ns: Sequence[int], replications: int, decide: Decide = new_decision) -> list[str]:
    """Pass rate of a policy no better than the reference (true score 0.5) whose judge fails on would-be losses."""
    rng = np.random.default_rng(13)
    rows = ["| judge | failures | " + " | ".join(f"n={n}" for n in ns) + " |", "|---|---|" + "---|" * len(ns)]
    for kind, failures in [("consistent", 0.05), ("consistent", 0.1), ("independent", 0.1)]:
        cells = cell_probabilities(kind, prefer_for_score(kind, 0.5), failures=failures)  # type: ignore[arg-type]
        rates = []
        for n in ns:
            t = simulate_tally(n, cells, replications, rng)
            rates.append(float(np.mean(decide(t.wins, t.ties + t.disagreements, t.losses, t.failures))))
        rows.append(f"| {kind} | {failures:.0%} | " + " | ".join(f"{r:.3f}" for r in rates) + " |")
    return rows


def power_rows(
    ns: Sequence[int], scores: Sequence[float] = (0.6, 0.7, 0.8), decide: Decide = new_decision
) -> list[str]:
    """Exact pass rate at true scores above the threshold."""
    rows = [
        "| judge | ties | true score | " + " | ".join(f"n={n}" for n in ns) + " |",
        "|---|---|---|" + "---|" * len(ns),
    ]
    for kind, tie in judges((0.0, 0.3, 0.6)):
        cells, reachable = judge_cells(kind, tie, scores)
        for j, score in enumerate(reachable):
            rates = []
            for n in ns:
                wins, halves, losses = outcomes(n)
                rates.append(
                    float(decide(wins, halves, losses, np.zeros_like(wins)) @ outcome_probabilities(n, cells[j]))
                )
            rows.append(f"| {kind} | {tie:.2f} | {score:.2f} | " + " | ".join(f"{r:.3f}" for r in rates) + " |")
    return rows


def position_rows(ns: Sequence[int], replications: int) -> list[str]:
    """How often the position-bias test flags the judge (p < 0.05), per judge and n (simulated)."""
    rng = np.random.default_rng(7)
    rows = ["| judge | first-shown picks | " + " | ".join(f"n={n}" for n in ns) + " |", "|---|---|" + "---|" * len(ns)]
    cases = [(kind, 0.0, 0.6) for kind in ("consistent", "independent", "correlated")]
    cases += [("position", tie, bias) for tie in (0.0, 0.3) for bias in (0.1, 0.2, 0.6)]
    for kind, tie, bias in cases:
        cells = cell_probabilities(
            kind, prefer_for_score(kind, 0.6, tie) if kind != "position" else (1 - tie) / 2, tie, first_bias=bias
        )  # type: ignore[arg-type]
        flagged = []
        for n in ns:
            t = simulate_tally(n, cells, replications, rng)
            flagged.append(float(np.mean(sign_test(t.first_favoured, t.second_favoured) < 0.05)))
        first = 0.5 + bias / 2 if kind == "position" else 0.5
        label = f"{kind}, ties {tie:.1f}" + (f", first_bias {bias}" if kind == "position" else ", score 0.6")
        rows.append(f"| {label} | {first:.2f} | " + " | ".join(f"{r:.3f}" for r in flagged) + " |")
    return rows


MARGINS: dict[str, tuple[Callable[[np.random.Generator, tuple[int, int]], np.ndarray], float]] = {
    "normal": (lambda rng, size: rng.normal(0.0, 1.0, size), 0.0),
    "t3": (lambda rng, size: rng.standard_t(3, size), 0.0),
    "log-normal": (lambda rng, size: rng.lognormal(0.0, 1.0, size), float(np.exp(0.5))),
}


def margin_rows(ns: Sequence[int], replications: int, intervals: dict[str, Callable] | None = None) -> list[str]:
    """Simulated coverage (mean width) of intervals for the mean margin, per distribution and n."""
    intervals = intervals or {"t": t_interval, "bootstrap-t": bootstrap_t_interval, "union (used)": mean_interval}
    rows = ["| margins | interval | " + " | ".join(f"n={n}" for n in ns) + " |", "|---|---|" + "---|" * len(ns)]
    for name, (draw, mean) in MARGINS.items():
        samples = {n: draw(np.random.default_rng(n), (replications, n)) for n in ns}
        for label, interval in intervals.items():
            cells = []
            for n in ns:
                low, high = interval(samples[n])
                cells.append(f"{np.mean((low <= mean) & (mean <= high)):.3f} ({np.mean(high - low):.2f})")
            rows.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer n and replications (about a minute)")
    parser.add_argument("--replications", type=int, default=20000)
    args = parser.parse_args()
    replications = 2000 if args.quick else args.replications
    coverage_ns = list(range(10, 41)) + list(range(45, 101, 5)) + list(range(120, 401, 20))
    false_ns = list(range(5, 401))
    if args.quick:
        coverage_ns, false_ns = [10, 16, 20, 31, 40, 100, 400], list(range(5, 61)) + [100, 200, 400]
    sections = [
        ("Win-rate interval: exact coverage (least over true scores 0.02–0.98)", lambda: coverage_rows(coverage_ns)),
        ("False passes at a true score of 0.5 = threshold, exact, n = 5…400", lambda: false_pass_rows(false_ns)),
        (
            "False passes at a true score of 0.6 = threshold 0.6, exact, n = 5…400",
            lambda: false_pass_rows(false_ns, 0.6),
        ),
        (
            f"False passes when the judge fails on would-be losses (true score 0.5; {replications} runs)",
            lambda: failure_rows([20, 40, 100, 400], replications),
        ),
        ("Power (exact pass rate)", lambda: power_rows([20, 40, 100, 200])),
        (
            f"Position-bias test: share of runs flagged at p < 0.05 ({replications} runs)",
            lambda: position_rows([20, 40, 100, 400], replications),
        ),
        (
            f"Mean-margin interval: coverage (mean width), {min(replications, 4000)} runs",
            lambda: margin_rows([20, 40, 100, 200], min(replications, 4000)),
        ),
    ]
    for title, rows in sections:
        start = time.perf_counter()
        table = rows()
        print(f"\n### {title}\n\n" + "\n".join(table) + f"\n\n({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

"""The length-controlled win rate on simulated judges of known behaviour: coverage, false passes, agreement, power.

Judges and lengths from :mod:`dpo_plugin.evaluation.simulation` (:class:`LengthJudge`,
:func:`simulate_lengths`): the reference's answers ~ N(150, 40) tokens, the policy's longer by
Δ ~ N(μ, 40); a judge finds the policy's answer better with probability σ(logit(LC) + φ·tanh(Δ/40)),
so its true length-controlled win rate is LC. Every number runs the check's own
:func:`~dpo_plugin.evaluation.length_control.length_controlled_verdict` and
:func:`~dpo_plugin.evaluation.verdicts.win_rate_verdict` on simulated verdicts. Prints the Markdown
tables recorded in benchmarks/README.md.

    cd benchmarks && ../.venv/bin/python simulate_length_control.py          # about 15 minutes on 2 cores
    ../.venv/bin/python simulate_length_control.py --quick                   # 100 runs per cell, about 4 minutes
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from collections.abc import Sequence

import numpy as np

from dpo_plugin.evaluation.length_control import length_controlled_verdict
from dpo_plugin.evaluation.simulation import LengthJudge, simulate_lengths
from dpo_plugin.evaluation.verdicts import win_rate_verdict

#: (label, kind, tie) of the judges in the coverage grid: the LC model's mean holds exactly for each.
JUDGES = (
    ("consistent", "consistent", 0.0),
    ("independent", "independent", 0.0),
    ("consistent, 30% ties", "consistent", 0.3),
)
COVERAGE_LC = (0.3, 0.5, 0.7, 0.85)
COVERAGE_PHI = (0.0, 1.0, 2.0)
COVERAGE_MU = (0.0, 20.0)


def run(judge: LengthJudge, n: int, mu: float, rng: np.random.Generator) -> tuple[dict, dict]:
    """One simulated check: the LC verdict and the raw verdict on the same verdicts."""
    policy, reference = simulate_lengths(n, mu, rng)
    first, second = judge.verdicts(policy - reference, rng)
    return length_controlled_verdict(first, second, policy, reference), win_rate_verdict(first, second)


def coverage_rows(ns: Sequence[int], replications: int) -> list[str]:
    """Per judge and n: the least and mean coverage of [lc_low, lc_high] over the grid, and where the least is."""
    rows = ["| judge | n | least coverage (LC, φ, μ) | mean coverage | confounded |", "|---|---|---|---|---|"]
    rng = np.random.default_rng(2024)
    for (label, kind, tie), n in itertools.product(JUDGES, ns):
        cells, flagged = [], 0
        for lc, phi, mu in itertools.product(COVERAGE_LC, COVERAGE_PHI, COVERAGE_MU):
            judge = LengthJudge(lc, phi, kind, tie)  # type: ignore[arg-type]
            covered = 0
            for _ in range(replications):
                v, _ = run(judge, n, mu, rng)
                covered += v["lc_low"] is not None and v["lc_low"] <= lc <= v["lc_high"]
                flagged += bool(v["confounded"])
            cells.append((covered / replications, lc, phi, mu))
        worst = min(cells)
        mean = float(np.mean([c[0] for c in cells]))
        share = flagged / (replications * len(cells))
        rows.append(
            f"| {label} | {n} | {worst[0]:.3f} ({worst[1]}, {worst[2]:g}, {worst[3]:g}) | {mean:.3f} | {share:.3f} |"
        )
    return rows


def length_only_rows(ns: Sequence[int], replications: int) -> list[str]:
    """A judge that prefers the longer answer and nothing else (true LC 0.5): pass rates of raw and LC,
    and LC's median."""
    rows = [
        "| judge | φ | μ (tokens) | n | raw passes | LC passes | LC median (estimated runs) | confounded |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rng = np.random.default_rng(35)
    for kind, phi, mu, n in itertools.product(
        ("consistent", "independent"), (1.0, 2.0, 4.0, math.inf), (20.0, 40.0, 80.0), ns
    ):
        judge = LengthJudge(0.5, phi, kind)  # type: ignore[arg-type]
        raw = lc = flagged = 0
        estimates = []
        for _ in range(replications):
            v, w = run(judge, n, mu, rng)
            raw, lc, flagged = raw + w["passed"], lc + v["passed"], flagged + v["confounded"]
            estimates += [] if v["lc_win_rate"] is None else [v["lc_win_rate"]]
        label = "always the longer" if math.isinf(phi) else f"{phi:g}"
        rows.append(
            f"| {kind} | {label} | {mu:g} | {n} | {raw / replications:.3f} | **{lc / replications:.3f}** | "
            f"{f'{np.median(estimates):.3f} ({len(estimates)})' if estimates else 'not estimable'} | "
            f"{flagged / replications:.3f} |"
        )
    return rows


def quality_only_rows(ns: Sequence[int], replications: int) -> list[str]:
    """A judge with a quality preference and no length effect: raw and LC pass rates, their intervals' agreement."""
    rows = [
        (
            "| judge | true score | μ (tokens) | n | raw passes | LC passes | power lost | intervals overlap | "
            "mean |LC − raw| | confounded |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rng = np.random.default_rng(1884)
    for kind, lc_true, mu, n in itertools.product(("consistent", "independent"), (0.5, 0.6, 0.7), (0.0, 20.0), ns):
        judge = LengthJudge(lc_true, 0.0, kind)  # type: ignore[arg-type]
        raw = lc = overlap = flagged = 0
        gaps = []
        for _ in range(replications):
            v, w = run(judge, n, mu, rng)
            raw, lc, flagged = raw + w["passed"], lc + v["passed"], flagged + v["confounded"]
            overlap += v["lc_low"] is not None and v["lc_low"] <= w["high"] and w["low"] <= v["lc_high"]
            gaps += [] if v["lc_win_rate"] is None else [abs(v["lc_win_rate"] - w["win_rate"])]
        rows.append(
            f"| {kind} | {lc_true} | {mu:g} | {n} | {raw / replications:.3f} | {lc / replications:.3f} | "
            f"{(raw - lc) / replications:+.3f} | {overlap / replications:.3f} | {np.mean(gaps):.3f} | "
            f"{flagged / replications:.3f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 runs per cell (about 4 minutes)")
    parser.add_argument("--replications", type=int, default=400, help="runs per grid cell (default 400)")
    parser.add_argument("--sections", default="coverage,length,quality", help="comma-separated subset to run")
    args = parser.parse_args()
    replications = 100 if args.quick else args.replications
    sections = {
        "coverage": (
            f"LC interval coverage, {replications} runs per cell; grid: true LC {COVERAGE_LC} × φ {COVERAGE_PHI} × "
            f"μ {COVERAGE_MU} tokens (sd of Δ 40)",
            lambda: coverage_rows((30, 40, 100, 200), replications),
        ),
        "length": (
            f"A judge preferring the longer answer and nothing else (true LC 0.5), {2 * replications} runs",
            lambda: length_only_rows((40, 100, 200), 2 * replications),
        ),
        "quality": (
            f"A judge with a quality preference and no length effect, {2 * replications} runs",
            lambda: quality_only_rows((40, 100), 2 * replications),
        ),
    }
    for name in args.sections.split(","):
        title, rows = sections[name]
        start = time.perf_counter()
        table = rows()
        print(f"\n### {title}\n\n" + "\n".join(table) + f"\n\n({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

"""PNG plots of a run for the report (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

CURVES = (
    ("loss", "loss"),
    ("rewards/margins", "reward margin"),
    ("rewards/accuracies", "reward accuracy"),
    ("logps/chosen", "log-prob, chosen"),
    ("logps/rejected", "log-prob, rejected"),
    ("logratio/chosen", "log-ratio to the reference per token"),
)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves(log_history: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """One panel per logged quantity (train and eval_ series) against the step; None when nothing was logged."""
    panels = [(key, title) for key, title in CURVES if any(key in e or f"eval_{key}" in e for e in log_history)]
    if not panels:
        return None
    plt = _pyplot()
    columns = 3
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for axis, (key, title) in zip(axes.flat, panels):
        series = [(key, "-", "train"), ("eval_" + key, "o--", "eval")]
        if key == "logratio/chosen":
            series = [(key, "-", "chosen"), ("logratio/rejected", "-", "rejected")]
        for name, style, label in series:
            points = [(e["step"], e[name]) for e in log_history if name in e and "step" in e]
            if points:
                axis.plot(*zip(*points), style, label=label)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("step")
        axis.legend(fontsize=8)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def win_rate_bars(name: str, metrics: dict[str, Any], interval: Sequence[float] | None, threshold: float | None, path: Path) -> Path:
    """Wins, ties and losses of the policy, and the win rate with its interval and threshold."""
    plt = _pyplot()
    figure, (counts, rate) = plt.subplots(1, 2, figsize=(9, 3.4), gridspec_kw={"width_ratios": [2, 1]})
    bars = {"wins": "wins", "ties": "ties", "losses": "losses", "judge failures": "failures"}
    counts.bar(list(bars), [metrics.get(key, 0) for key in bars.values()], color=["#2a9d8f", "#adb5bd", "#e76f51", "#6c757d"])
    counts.set_title(f"{name}: per-prompt outcome (both orders)", fontsize=10)
    win = metrics.get("win_rate", float("nan"))
    if interval is not None:
        rate.errorbar([0], [win], yerr=[[win - interval[0]], [interval[1] - win]], fmt="o", capsize=8)
    if threshold is not None:
        rate.axhline(threshold, color="#e76f51", linestyle="--", label=f"threshold {threshold}")
        rate.legend(fontsize=8)
    rate.set_xlim(-1, 1)
    rate.set_ylim(0, 1)
    rate.set_xticks([])
    rate.set_title("win rate, 95% interval", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def margin_histogram(margins: Sequence[float], path: Path) -> Path:
    """Histogram of the held-out reward margins β·Δ (right of 0: the chosen answer is preferred)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 3.4))
    axis.hist(margins, bins=min(40, max(5, len(margins) // 3)), color="#457b9d")
    axis.axvline(0, color="black", linewidth=1)
    axis.set_xlabel("reward margin (chosen − rejected)")
    axis.set_ylabel("pairs")
    axis.set_title(f"held-out reward margins (n={len(margins)})", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

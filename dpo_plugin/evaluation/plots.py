"""PNG plots for the report (matplotlib, Agg backend): training curves, win/tie/loss bars, margin histogram."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

#: Panels of the training-curves figure: title → the keys TRL logs (each also as ``eval_<key>``).
CURVE_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("loss", ("loss",)),
    ("reward margin", ("rewards/margins",)),
    ("reward accuracy", ("rewards/accuracies",)),
    ("implicit rewards", ("rewards/chosen", "rewards/rejected")),
    ("log-probabilities", ("logps/chosen", "logps/rejected")),
    ("per-token log-ratio to the reference", ("logratio/chosen", "logratio/rejected")),
)
OUTCOME_COLOURS = {"wins": "#2a9d8f", "ties": "#adb5bd", "disagreements": "#e9c46a", "losses": "#e76f51", "failures": "#6c757d"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _series(log_history: Sequence[Mapping[str, Any]], key: str) -> list[tuple[float, float]]:
    """``(step, value)`` of every log entry with a finite number under ``key``."""
    return [
        (entry["step"], float(entry[key])) for entry in log_history if "step" in entry and _is_number(entry.get(key))
    ]


def _save(plt: Any, figure: Any, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def training_curves(log_history: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """One panel per quantity of :data:`CURVE_PANELS` that was logged (train solid, eval dashed); None when none was."""
    panels = []
    for title, keys in CURVE_PANELS:
        lines = []
        for label in (name for key in keys for name in (key, f"eval_{key}")):
            points = _series(log_history, label)
            if points:
                lines.append((label, points))
        if lines:
            panels.append((title, lines))
    if not panels:
        return None
    plt = _pyplot()
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for axis, (title, lines) in zip(axes.flat, panels):
        for label, points in lines:
            axis.plot(*zip(*points), "o--" if label.startswith("eval_") else "-", label=label, markersize=3)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("step")
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    return _save(plt, figure, path)


def win_rate_bars(
    name: str, metrics: Mapping[str, Any], interval: Sequence[float] | None, threshold: float | None, path: Path
) -> Path:
    """Per-prompt wins, ties, disagreements, losses and judge failures; beside them the win rate with its interval and threshold."""
    plt = _pyplot()
    figure, (counts, rate) = plt.subplots(1, 2, figsize=(9, 3.4), gridspec_kw={"width_ratios": [2, 1]})
    counts.bar(
        list(OUTCOME_COLOURS), [metrics.get(key, 0) for key in OUTCOME_COLOURS], color=list(OUTCOME_COLOURS.values())
    )
    counts.set_ylabel("prompts")
    counts.tick_params(axis="x", labelsize=8)
    counts.set_title(f"{name}: policy vs reference, judged in both orders", fontsize=10)
    win = metrics.get("win_rate")
    if _is_number(win):
        low, high = interval if interval is not None else (win, win)
        rate.errorbar([0], [win], yerr=[[max(0.0, win - low)], [max(0.0, high - win)]], fmt="o", capsize=8)
        rate.set_title(f"win rate {win:.3f} [{low:.3f}, {high:.3f}]", fontsize=10)
    else:
        rate.text(0, 0.5, "no usable prompts", ha="center")
        rate.set_title("win rate", fontsize=10)
    if threshold is not None:
        rate.axhline(threshold, color=OUTCOME_COLOURS["losses"], linestyle="--", label=f"threshold {threshold}")
        rate.legend(fontsize=8)
    rate.set_xlim(-1, 1)
    rate.set_ylim(0, 1)
    rate.set_xticks([])
    return _save(plt, figure, path)


def margin_histogram(margins: Sequence[float], path: Path) -> Path:
    """Histogram of held-out reward margins r_w − r_l (right of 0: the chosen answer is preferred)."""
    plt = _pyplot()
    values = [float(m) for m in margins if _is_number(m)]
    figure, axis = plt.subplots(figsize=(5.5, 3.4))
    axis.hist(values, bins=min(40, max(5, len(values) // 3)), color="#457b9d")
    axis.axvline(0, color="black", linewidth=1)
    axis.set_xlabel("reward margin (chosen − rejected)")
    axis.set_ylabel("pairs")
    axis.set_title(f"held-out reward margins (n={len(values)})", fontsize=10)
    return _save(plt, figure, path)

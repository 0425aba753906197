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
#: One colour per quantity in every plot: chosen answers (and the policy's wins) teal, rejected ones (and the
#: reference's wins) red, margins blue; a curve's eval series has its train series' colour, dashed.
COLOURS = {"chosen": "#2a9d8f", "rejected": "#e76f51", "margins": "#457b9d", "loss": "#264653", "accuracies": "#8d5fd3"}
OUTCOME_COLOURS = {
    "wins": COLOURS["chosen"],
    "ties": "#adb5bd",
    "disagreements": "#e9c46a",
    "losses": COLOURS["rejected"],
    "failures": "#6c757d",
}
#: A series with at most this many points is drawn with markers (a single point is invisible as a bare line).
FEW_POINTS = 20


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


def series_colour(key: str) -> str:
    """The colour of a logged quantity (``rewards/chosen``, ``eval_loss`` …): by its last part, grey if unknown."""
    return COLOURS.get(key.removeprefix("eval_").rsplit("/", 1)[-1], "#555555")


def _panels(log_history: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[tuple[str, list[tuple[float, float]]]]]]:
    """``(title, [(key, points), …])`` for each panel of :data:`CURVE_PANELS` with a logged series."""
    panels = []
    for title, keys in CURVE_PANELS:
        lines = [(label, _series(log_history, label)) for key in keys for label in (key, f"eval_{key}")]
        lines = [(label, points) for label, points in lines if points]
        if lines:
            panels.append((title, lines))
    return panels


def curves_figure(log_history: Sequence[Mapping[str, Any]]) -> Any:
    """The training-curves figure: a panel per logged quantity (train solid, eval dashed, markers on short
    series, one colour per quantity); None when nothing was logged."""
    panels = _panels(log_history)
    if not panels:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for axis, (title, lines) in zip(axes.flat, panels):
        for label, points in lines:
            style = {"linestyle": "-", "marker": "o" if len(points) <= FEW_POINTS else None, "markersize": 4}
            if label.startswith("eval_"):  # rings around the train dots at the same steps
                style = {"linestyle": "--", "marker": "o", "markersize": 7, "markerfacecolor": "none"}
            axis.plot(*zip(*points), color=series_colour(label), label=label, **style)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("step")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        steps = {step for _, points in lines for step, _ in points}
        if len(steps) == 1:  # one logged step: whole steps either side, not a range of ±0.05
            axis.set_xlim(min(steps) - 1, min(steps) + 1)
        axis.legend(fontsize=7)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    return figure


def training_curves(log_history: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """:func:`curves_figure` saved to ``path``; None (nothing written) when nothing was logged."""
    figure = curves_figure(log_history)
    return None if figure is None else _save(_pyplot(), figure, path)


def win_rate_bars(
    name: str, metrics: Mapping[str, Any], interval: Sequence[float] | None, threshold: float | None, path: Path
) -> Path:
    """Per-prompt wins, ties, disagreements, losses and judge failures;
    beside them the win rate with its interval and threshold."""
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
    axis.hist(values, bins=min(40, max(5, len(values) // 3)), color=COLOURS["margins"])
    axis.axvline(0, color="black", linewidth=1)
    axis.set_xlabel("reward margin (chosen − rejected)")
    axis.set_ylabel("pairs")
    axis.set_title(f"held-out reward margins (n={len(values)})", fontsize=10)
    return _save(plt, figure, path)


def _binned(differences: list[float], scores: list[float], bins: int = 6) -> tuple[list[float], list[float]]:
    """Mean score per quantile bin of the length differences (at most ``bins`` bins of at least 5 prompts)."""
    import numpy as np

    count = max(1, min(bins, len(differences) // 5))
    order = np.argsort(differences)
    groups = np.array_split(order, count)
    x = [float(np.mean(np.asarray(differences)[g])) for g in groups if len(g)]
    y = [float(np.mean(np.asarray(scores)[g])) for g in groups if len(g)]
    return x, y


def length_preference(
    differences: Sequence[float], scores: Sequence[float | None], metrics: Mapping[str, Any], path: Path
) -> Path:
    """Per-prompt preference (1 policy, ½, 0 reference) against the length difference policy − reference, with the
    binned means, the fitted length model σ(θ + φ·tanh(Δ/sd)) and the length-controlled win rate at Δ = 0."""
    import numpy as np

    plt = _pyplot()
    kept = [(float(d), float(s)) for d, s in zip(differences, scores) if _is_number(d) and _is_number(s)]
    figure, axis = plt.subplots(figsize=(6.4, 3.8))
    if kept:
        x, y = (np.array(column) for column in zip(*kept))
        jitter = np.random.default_rng(0).uniform(-0.03, 0.03, y.size)
        axis.scatter(x, y + jitter, s=12, alpha=0.5, color=COLOURS["margins"], label="prompts (jittered)")
        axis.plot(*_binned(list(x), list(y)), "s-", color=COLOURS["loss"], label="mean per bin")
        _fitted_curve(axis, x, metrics)
    raw = metrics.get("win_rate")
    if _is_number(raw):
        axis.axhline(raw, color="#adb5bd", linestyle=":", label=f"raw win rate {raw:.3f}")
    axis.axvline(0, color="black", linewidth=0.8)
    axis.set_xlabel("answer length difference, policy − reference (tokens)")
    axis.set_ylabel("preference for the policy")
    axis.set_ylim(-0.08, 1.08)
    axis.set_title(f"preference vs length (n={len(kept)})", fontsize=10)
    if axis.get_legend_handles_labels()[0]:  # nothing labelled when every judgement failed
        axis.legend(fontsize=7, loc="best")
    return _save(plt, figure, path)


def _fitted_curve(axis: Any, x: Any, metrics: Mapping[str, Any]) -> None:
    """The fitted length model and the LC win rate with its interval at Δ = 0, when estimated."""
    import numpy as np

    lc, phi, sd = (metrics.get(key) for key in ("lc_win_rate", "length_coefficient", "length_difference_sd"))
    if not _is_number(lc) or not 0 < lc < 1:
        return
    if _is_number(phi) and _is_number(sd) and sd > 0:
        grid = np.linspace(min(x.min(), 0), max(x.max(), 0), 200)
        curve = 1 / (1 + np.exp(-(np.log(lc / (1 - lc)) + phi * np.tanh(grid / sd))))
        axis.plot(grid, curve, color=COLOURS["chosen"], label=f"fitted: φ = {phi:.2f}")
    low, high = metrics.get("lc_low"), metrics.get("lc_high")
    if _is_number(low) and _is_number(high):
        axis.errorbar(
            [0],
            [lc],
            yerr=[[lc - low], [high - lc]],
            fmt="o",
            color=COLOURS["rejected"],
            capsize=6,
            label=f"length-controlled {lc:.3f} [{low:.3f}, {high:.3f}]",
        )

"""The evaluation report in ``<output_dir>/eval/``: report.json, report.md and PNG plots.

report.json is the public contract: ``{"passed": bool, "checks": {name: CheckResult.to_dict()}, ...}``
plus the ``extra`` entries, ``"training_warnings"`` (what the run's log history shows, e.g. the chosen
log-prob drift of :mod:`dpo_plugin.chosen_drift`) and ``"files"`` (what was written). It passes only
when there is at least one check and every check passed; a skipped check never passes. Non-finite
numbers are written as null.
"""

from __future__ import annotations

import html
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..chosen_drift import chosen_drift_in
from ..types import CheckResult
from . import plots
from .metric_help import explain

logger = logging.getLogger(__name__)

#: The metric shown in the summary table for the built-in checks; other checks may name theirs in
#: ``details["headline"]``, or have a metric named like the check.
HEADLINE = {"reward_margin": "accuracy", "win_rate": "win_rate", "degeneration": "unfinished_difference"}
RESERVED_KEYS = ("passed", "checks", "training_warnings", "files")
SAMPLE_COLUMNS = ("prompt", "reference", "policy", "verdict")
#: Labels of report.md's "What was evaluated" rows: ``extra["evaluated"]``'s keys, then the other ``extra`` keys.
EVALUATED_LABELS = {
    "model": "model",
    "base": "base model (of the adapter)",
    "reference": "reference model",
    "data": "held-out data",
    "split": "split",
    "judge": "judge",
    "beta": "β of the implicit rewards",
    "max_length": "max_length (tokens)",
}
EXTRA_LABELS = {"reference": "reference strategy", "losses": "losses"}


def jsonable(value: Any) -> Any:
    """``value`` with numpy/torch scalars and arrays as Python numbers and lists, tuples as lists, NaN/±inf as None."""
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy or torch, scalar or array
        return jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def cell(value: Any) -> str:
    """``value`` as one Markdown table cell: HTML escaped, pipes escaped, line breaks as ``<br>``."""
    text = html.escape(str(value), quote=False).replace("|", "\\|")
    return re.sub(r"\r\n|\r|\n", "<br>", text)


def _number(value: Any, spec: str = ".3f") -> str:
    """A float formatted with ``spec``; a missing or non-finite number as ``-``; anything else as text."""
    value = jsonable(value)
    if isinstance(value, float):
        return format(value, spec)
    return "-" if value is None else str(value)


def _status(result: CheckResult) -> str:
    return "skipped" if result.skipped is not None else ("passed" if result.passed else "FAILED")


def headline(name: str, metrics: Mapping[str, Any], details: Mapping[str, Any]) -> str:
    """``"<metric> = <value>"`` for a check's headline metric (``details["headline"]``, the built-in's,
    or its own name)."""
    metric = details.get("headline") or HEADLINE.get(name) or name
    return f"{metric} = {_number(metrics[metric])}" if metric in metrics else "-"


def _interval(result: CheckResult) -> str:
    if result.interval is None:
        return "-"
    return f"[{_number(float(result.interval[0]))}, {_number(float(result.interval[1]))}]"


def _check_entry(result: CheckResult) -> dict[str, Any]:
    entry = result.to_dict()
    entry["passed"] = bool(result.passed) and result.skipped is None
    return entry


def _value(value: Any) -> str:
    """An ``extra`` value as a cell: lists joined with commas, None as ``-``."""
    if isinstance(value, (list, tuple)):
        return cell(", ".join(map(str, value)))
    return "-" if value is None else cell(value)


def _evaluated(extra: Mapping[str, Any]) -> list[str]:
    """The "What was evaluated" section: ``extra["evaluated"]`` (from ``dpo-plugin evaluate``),
    then the other entries."""
    evaluated = extra.get("evaluated")
    rows = [(EVALUATED_LABELS.get(k, k), v) for k, v in evaluated.items()] if isinstance(evaluated, Mapping) else []
    rows += [(EXTRA_LABELS.get(k, k), v) for k, v in extra.items() if k != "evaluated"]
    if not rows:
        return []
    table = [f"| {cell(label)} | {_value(value)} |" for label, value in rows]
    return ["## What was evaluated", "", "| what | value |", "|---|---|", *table, ""]


def _check_sections(r: CheckResult) -> list[str]:
    """A check's metrics, each with its meaning; its judge failures; its side-by-side samples."""
    lines: list[str] = []
    if r.metrics:
        lines += ["", f"## {cell(r.name)}", "", "| metric | value | meaning |", "|---|---|---|"]
        lines += [
            f"| {cell(key)} | {cell(_number(value, '.4g'))} | {cell(explain(r.name, key, r.details)) or '-'} |"
            for key, value in r.metrics.items()
        ]
    errors = r.details.get("judge_errors")
    if errors:
        lines += ["", f"### {cell(r.name)}: judge failures", ""] + [f"- {cell(error)}" for error in errors]
    samples = r.details.get("samples")
    if samples:
        lines += ["", f"### {cell(r.name)}: side-by-side samples", ""]
        lines += ["| " + " | ".join(SAMPLE_COLUMNS) + " |", "|---|---|---|---|"]
        lines += [
            "| " + " | ".join(cell(sample.get(column, "")) for column in SAMPLE_COLUMNS) + " |" for sample in samples
        ]
    return lines


def _markdown(
    results: Sequence[CheckResult], report: Mapping[str, Any], extra: Mapping[str, Any], images: Sequence[str]
) -> str:
    lines = ["# Post-training checks", "", f"**Overall: {'PASSED' if report['passed'] else 'NOT PASSED'}**", ""]
    lines += _evaluated(extra)
    lines += ["| check | result | headline | 95% interval | threshold | note |", "|---|---|---|---|---|---|"]
    for r in results:
        notes = [*r.details.get("reasons", []), *(f"warning: {w}" for w in r.details.get("warnings", []))]
        note = r.skipped if r.skipped is not None else "; ".join(map(str, notes))
        lines.append(
            f"| {cell(r.name)} | {_status(r)} | {cell(headline(r.name, r.metrics, r.details))} | {_interval(r)} | "
            f"{_number(r.threshold)} | {cell(note)} |"
        )
    if not results:
        lines.append("| (no checks ran) | FAILED | - | - | - | - |")
    for r in results:
        lines += _check_sections(r)
    if report.get("training_warnings"):
        lines += ["", "## During training", ""] + [f"- warning: {cell(w)}" for w in report["training_warnings"]]
    if images:
        lines += ["", "## Plots", ""] + [f"![{Path(name).stem}]({name})" for name in images]
    return "\n".join(lines) + "\n"


def _plot_file(kind: str, check: str, owners: Sequence[str]) -> str:
    """``<kind>.png`` when one check has this plot, else ``<kind>_<check>.png``."""
    return f"{kind}.png" if len(owners) == 1 else f"{kind}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', check)}.png"


def _plots(results: Sequence[CheckResult], log_history: Sequence[Mapping[str, Any]], folder: Path) -> list[str]:
    written = [plots.training_curves(log_history, folder / "training_curves.png")]
    with_outcomes = [r for r in results if {"wins", "ties", "losses"} <= r.metrics.keys()]
    with_margins = [r for r in results if r.details.get("margins")]
    for r in with_outcomes:
        path = folder / _plot_file("win_rate", r.name, [o.name for o in with_outcomes])
        written.append(plots.win_rate_bars(r.name, r.metrics, r.interval, r.threshold, path))
    for r in with_margins:
        path = folder / _plot_file("margin_histogram", r.name, [o.name for o in with_margins])
        written.append(plots.margin_histogram(r.details["margins"], path))
    with_lengths = [r for r in results if r.details.get("length_differences") and r.details.get("prompt_scores")]
    for r in with_lengths:
        path = folder / _plot_file("length_preference", r.name, [o.name for o in with_lengths])
        written.append(
            plots.length_preference(r.details["length_differences"], r.details["prompt_scores"], r.metrics, path)
        )
    return [path.name for path in written if path is not None]


def _training_warnings(log_history: Sequence[Mapping[str, Any]], extra: Mapping[str, Any]) -> list[str]:
    """What the training log history shows that the checks do not: the chosen log-prob drift."""
    losses = extra.get("losses")
    drift = chosen_drift_in(log_history, losses if isinstance(losses, (list, tuple)) else ())
    return [drift] if drift else []


def write_report(
    results: Sequence[CheckResult],
    output_dir: str | Path,
    log_history: Sequence[Mapping[str, Any]],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write report.json, report.md and the PNG plots to ``<output_dir>/eval/``; return the report (as in report.json).

    ``extra`` entries (e.g. the reference strategy) are added at the top level of the report; they
    may not use the keys ``passed``, ``checks``, ``training_warnings`` or ``files``. ``extra["losses"]``, when
    given, tailors the remedies the training warnings name.
    """
    extra = dict(extra or {})
    clash = [key for key in RESERVED_KEYS if key in extra]
    if clash:
        raise ValueError(f"write_report: extra may not set {clash}; those keys are the report's own.")
    names = [r.name for r in results]
    if len(set(names)) != len(names):
        raise ValueError(f"write_report: check names must be unique, got {names}.")
    folder = Path(output_dir) / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    images = _plots(results, log_history, folder)
    report = jsonable(
        {
            "passed": bool(results) and all(r.passed and r.skipped is None for r in results),
            "checks": {r.name: _check_entry(r) for r in results},
            **extra,
            "training_warnings": _training_warnings(log_history, extra),
            "files": ["report.json", "report.md", *images],
        }
    )
    (folder / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    (folder / "report.md").write_text(_markdown(results, report, extra, images))
    logger.info("Evaluation report written to %s: %s.", folder, "passed" if report["passed"] else "NOT passed")
    return report

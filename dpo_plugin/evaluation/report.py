"""The evaluation report in ``<output_dir>/eval/``: report.json, report.md and PNG plots."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..types import CheckResult
from . import plots

logger = logging.getLogger(__name__)

HEADLINE = {"reward_margin": "accuracy", "win_rate": "win_rate"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", "<br>")


def _status(result: CheckResult) -> str:
    return "skipped" if result.skipped else ("passed" if result.passed else "FAILED")


def _markdown(results: Sequence[CheckResult], report: dict[str, Any], images: list[Path]) -> str:
    lines = [
        "# Post-training checks",
        "",
        f"**Overall: {'PASSED' if report['passed'] else 'NOT PASSED'}**",
        "",
    ]
    for key in ("reference", "losses"):
        if key in report:
            lines.append(f"- {key}: {_cell(report[key])}")
    lines += ["", "| check | result | headline | 95% interval | threshold | note |", "|---|---|---|---|---|---|"]
    for r in results:
        metric = HEADLINE.get(r.name)
        headline = f"{metric} = {r.metrics[metric]:.3f}" if metric in r.metrics and isinstance(r.metrics[metric], float) else "-"
        interval = f"[{r.interval[0]:.3f}, {r.interval[1]:.3f}]" if r.interval else "-"
        note = r.skipped or "; ".join(r.details.get("reasons", []))
        lines.append(f"| {r.name} | {_status(r)} | {headline} | {interval} | {r.threshold if r.threshold is not None else '-'} | {_cell(note)} |")
    for r in results:
        if r.metrics:
            lines += ["", f"## {r.name}", "", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {_cell(v)} |" for k, v in r.metrics.items()]
        samples = r.details.get("samples")
        if samples:
            lines += ["", f"### {r.name}: side-by-side samples", "", "| prompt | reference | policy | verdict |", "|---|---|---|---|"]
            lines += [f"| {_cell(s['prompt'])} | {_cell(s['reference'])} | {_cell(s['policy'])} | {_cell(s['verdict'])} |" for s in samples]
    if images:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in images]
    return "\n".join(lines) + "\n"


def write_report(
    results: Sequence[CheckResult], output_dir: str | Path, log_history: Sequence[dict[str, Any]], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write report.json, report.md and the plots to ``<output_dir>/eval/``; return the report.

    The report passes only when there is at least one check and every check passed (a skipped check fails).
    """
    folder = Path(output_dir) / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "passed": bool(results) and all(r.passed for r in results),
        "checks": {r.name: r.to_dict() for r in results},
        **(extra or {}),
    }
    images = [p for p in [plots.training_curves(log_history, folder / "training_curves.png")] if p]
    for r in results:
        if {"wins", "ties", "losses"} <= r.metrics.keys():
            images.append(plots.win_rate_bars(r.name, r.metrics, r.interval, r.threshold, folder / f"{r.name}.png"))
        if r.details.get("margins"):
            images.append(plots.margin_histogram(r.details["margins"], folder / "margin_histogram.png"))
    report["files"] = ["report.json", "report.md"] + [p.name for p in images]
    (folder / "report.json").write_text(json.dumps(_jsonable(report), indent=2))
    (folder / "report.md").write_text(_markdown(results, report, images))
    logger.info("Evaluation report written to %s (%s).", folder, "passed" if report["passed"] else "not passed")
    return _jsonable(report)

"""The report files: report.json (the contract shape), report.md (table, escaped samples), PNG plots."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402

from dpo_plugin.evaluation.report import write_report  # noqa: E402
from dpo_plugin.types import CheckResult  # noqa: E402

HISTORY = [
    {"loss": 0.7 - 0.05 * s, "rewards/margins": 0.1 * s, "rewards/accuracies": 0.5 + 0.04 * s, "logps/chosen": -50 + s,
     "logps/rejected": -60 - s, "logratio/chosen": 0.01 * s, "logratio/rejected": -0.02 * s, "step": s}
    for s in range(1, 6)
] + [{"eval_loss": 0.5, "eval_rewards/margins": 0.4, "step": 5}]  # fmt: skip


def _results(win_passed=True):
    margin = CheckResult("reward_margin", True, {"accuracy": 0.8, "n": 10}, (0.6, 0.9), 0.5, {"margins": [0.1, -0.2, 0.5, 0.3]})
    samples = [{"prompt": "a | b\nc", "reference": "ref | x", "policy": "pol", "verdict": "policy wins"}]
    win = CheckResult(
        "win_rate", win_passed, {"win_rate": 0.7, "wins": 6, "ties": 2, "losses": 2, "failures": 0}, (0.52, 0.83), 0.5, {"samples": samples}
    )
    return [margin, win]


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and matplotlib.image.imread(path).shape[0] > 50


def test_report_files(tmp_path):
    report = write_report(_results(), tmp_path, HISTORY, extra={"reference": "copy"})
    folder = tmp_path / "eval"
    loaded = json.loads((folder / "report.json").read_text())
    assert loaded["passed"] is True and set(loaded["checks"]) == {"reward_margin", "win_rate"}
    assert loaded["checks"]["win_rate"]["passed"] is True and loaded["checks"]["win_rate"]["metrics"]["wins"] == 6
    assert loaded["reference"] == "copy" and report == loaded
    markdown = (folder / "report.md").read_text()
    assert "| reward_margin | passed | accuracy = 0.800 | [0.600, 0.900] | 0.5 |" in markdown
    assert "| a \\| b<br>c | ref \\| x | pol | policy wins |" in markdown
    for name in ("training_curves.png", "win_rate.png", "margin_histogram.png"):
        assert _is_png(folder / name), name
        assert f"![{name[:-4]}]({name})" in markdown


def test_report_fails_when_a_check_fails_is_skipped_or_missing(tmp_path):
    assert write_report(_results(win_passed=False), tmp_path, HISTORY)["passed"] is False
    skipped = CheckResult("win_rate", False, skipped="no judge")
    report = write_report([_results()[0], skipped], tmp_path, [])
    assert report["passed"] is False and report["checks"]["win_rate"]["skipped"] == "no judge"
    assert "| win_rate | skipped |" in (tmp_path / "eval" / "report.md").read_text()
    assert write_report([], tmp_path, [])["passed"] is False

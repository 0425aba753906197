"""The report files: report.json (the contract shape), report.md (table, escaped samples), PNG plots."""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.image
import numpy as np
import pytest

from dpo_plugin.evaluation import plots
from dpo_plugin.evaluation.report import write_report
from dpo_plugin.types import CheckResult

HISTORY = [
    {
        "loss": 0.7 - 0.05 * s,
        "rewards/margins": 0.1 * s,
        "rewards/accuracies": 0.5 + 0.04 * s,
        "rewards/chosen": 0.01 * s,
        "rewards/rejected": -0.01 * s,
        "logps/chosen": -50 + s,
        "logps/rejected": -60 - s,
        "logratio/chosen": 0.01 * s,
        "logratio/rejected": -0.02 * s,
        "step": s,
    }
    for s in range(1, 6)
] + [{"eval_loss": 0.5, "eval_rewards/margins": 0.4, "step": 5}, {"train_runtime": 3.0, "train_loss": 0.6, "step": 5}]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DPI = 110  # the plots' resolution: a figure of w × h inches is (110·w) × (110·h) pixels


def _results(win_passed=True):
    margin = CheckResult(
        "reward_margin",
        True,
        {"accuracy": np.float32(0.75), "n": np.int64(10), "margin_mean": math.nan},
        (0.6, 0.9),
        0.5,
        {"margins": [0.1, -0.2, 0.5, 0.3], "reasons": []},
    )
    samples = [{"prompt": "a | b\nc", "reference": "ref | x", "policy": "<b>bold</b>", "verdict": "policy wins"}]
    win = CheckResult(
        "win_rate",
        win_passed,
        {"win_rate": 0.7, "wins": 6, "ties": 2, "losses": 2, "failures": 1},
        (0.52, 0.83),
        0.5,
        {
            "samples": samples,
            "judge_errors": ["HTTP 500 | bad"],
            "reasons": [] if win_passed else ["lower bound 0.45 <= 0.5"],
        },
    )
    return [margin, win]


def _png_shape(path):
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    return matplotlib.image.imread(path).shape


def test_report_files_and_contract_shape(tmp_path):
    report = write_report(_results(), tmp_path, HISTORY, extra={"reference": "copy", "losses": ["sigmoid", "sft"]})
    folder = tmp_path / "eval"
    loaded = json.loads((folder / "report.json").read_text())
    assert report == loaded
    assert loaded["passed"] is True and set(loaded["checks"]) == {"reward_margin", "win_rate"}
    assert loaded["reference"] == "copy" and loaded["losses"] == ["sigmoid", "sft"]
    margin = loaded["checks"]["reward_margin"]
    assert set(margin) == {"passed", "metrics", "interval", "threshold", "details"}
    assert margin["metrics"] == {"accuracy": 0.75, "n": 10, "margin_mean": None}  # numpy → numbers, NaN → null
    assert margin["interval"] == [0.6, 0.9] and margin["threshold"] == 0.5 and margin["passed"] is True
    assert loaded["checks"]["win_rate"]["metrics"]["wins"] == 6
    images = ["training_curves.png", "win_rate.png", "margin_histogram.png"]
    assert loaded["files"] == ["report.json", "report.md", *images]
    assert sorted(p.name for p in folder.iterdir()) == sorted(loaded["files"])
    for name in images:
        assert len(_png_shape(folder / name)) == 3
    assert _png_shape(folder / "training_curves.png")[:2] == (round(3.2 * 2 * DPI), round(4.2 * 3 * DPI))  # 6 panels


def test_report_markdown(tmp_path):
    write_report(_results(win_passed=False), tmp_path, HISTORY, extra={"reference": "copy | frozen"})
    markdown = (tmp_path / "eval" / "report.md").read_text()
    assert "**Overall: NOT PASSED**" in markdown and "| reference strategy | copy \\| frozen |" in markdown
    assert "| check | result | headline | 95% interval | threshold | note |" in markdown
    assert "| reward_margin | passed | accuracy = 0.750 | [0.600, 0.900] | 0.500 |  |" in markdown
    assert "| win_rate | FAILED | win_rate = 0.700 | [0.520, 0.830] | 0.500 | lower bound 0.45 &lt;= 0.5 |" in markdown
    assert "| prompt | reference | policy | verdict |" in markdown
    assert "| a \\| b<br>c | ref \\| x | &lt;b&gt;bold&lt;/b&gt; | policy wins |" in markdown  # pipes, newlines, HTML
    assert "- HTTP 500 \\| bad" in markdown
    assert "| margin_mean | - | mean reward margin r_w − r_l, r = β·log π/π_ref |" in markdown
    assert "| accuracy | 0.75 | share of pairs with r_w &gt; r_l (ties are not wins) |" in markdown
    assert "| wins | 6 | prompts where both orders prefer the policy |" in markdown
    for name in ("training_curves", "win_rate", "margin_histogram"):
        assert f"![{name}]({name}.png)" in markdown


def test_evaluate_report_says_what_was_evaluated(tmp_path):
    evaluated = {
        "model": "runs/lora",
        "base": "org/base",
        "reference": "org/base",
        "data": "pairs.jsonl",
        "split": "test",
        "judge": None,
        "beta": 0.1,
        "max_length": 128,
    }
    extra = {"evaluated": evaluated, "reference": "adapter (the policy with its PEFT adapters disabled)"}
    report = write_report(_results(), tmp_path, [], extra=extra)
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["evaluated"] == evaluated == report["evaluated"]
    markdown = (tmp_path / "eval" / "report.md").read_text()
    section = markdown[markdown.index("## What was evaluated") : markdown.index("| check | result |")]
    assert section.splitlines()[2:] == [
        "| what | value |",
        "|---|---|",
        "| model | runs/lora |",
        "| base model (of the adapter) | org/base |",
        "| reference model | org/base |",
        "| held-out data | pairs.jsonl |",
        "| split | test |",
        "| judge | - |",
        "| β of the implicit rewards | 0.1 |",
        "| max_length (tokens) | 128 |",
        "| reference strategy | adapter (the policy with its PEFT adapters disabled) |",
        "",
    ]


def test_every_metric_gets_its_meaning(tmp_path):
    explained = {"metric_help": {"ratio": "policy/reference length"}}
    own = CheckResult("length_growth", True, {"ratio": 1.1, "mystery": 2}, details=explained)
    write_report([*_results(), own], tmp_path, [])
    markdown = (tmp_path / "eval" / "report.md").read_text()
    rows = [
        line for line in markdown.splitlines() if line.count("|") == 4 and not line.startswith(("| metric", "|---"))
    ]
    assert len(rows) == 3 + 5 + 2  # reward_margin's, win_rate's and length_growth's metrics
    assert "| ratio | 1.1 | policy/reference length |" in rows and "| mystery | 2 | - |" in rows
    assert all(not row.endswith("| - |") for row in rows if "mystery" not in row)  # every built-in metric explained


def test_report_fails_when_a_check_fails_is_skipped_or_missing(tmp_path):
    assert write_report(_results(win_passed=False), tmp_path, HISTORY)["passed"] is False
    skipped = CheckResult("win_rate", False, skipped="no judge")
    report = write_report([_results()[0], skipped], tmp_path, [])
    assert report["passed"] is False and report["checks"]["win_rate"]["skipped"] == "no judge"
    assert report["checks"]["win_rate"]["passed"] is False
    assert "| win_rate | skipped | - | - | - | no judge |" in (tmp_path / "eval" / "report.md").read_text()
    marked_passed = CheckResult("win_rate", True, skipped="no reference")  # a skip never passes
    report = write_report([_results()[0], marked_passed], tmp_path, [])
    assert report["passed"] is False and report["checks"]["win_rate"]["passed"] is False
    empty = write_report([], tmp_path / "empty", [])
    assert empty["passed"] is False and empty["checks"] == {} and empty["files"] == ["report.json", "report.md"]
    assert "(no checks ran)" in (tmp_path / "empty" / "eval" / "report.md").read_text()


def test_training_curves_skip_what_was_not_logged(tmp_path):
    history = [{"loss": 1.0 / s, "step": s} for s in range(1, 4)] + [
        {"eval_loss": 0.4, "step": 3},
        {"loss": None, "step": 4},
    ]
    report = write_report([_results()[0]], tmp_path, history)
    assert "training_curves.png" in report["files"]
    assert _png_shape(tmp_path / "eval" / "training_curves.png")[:2] == (
        round(3.2 * DPI),
        round(4.2 * DPI),
    )  # one panel
    nothing = write_report([_results()[0]], tmp_path / "none", [{"train_runtime": 1.0, "step": 1}])
    assert "training_curves.png" not in nothing["files"]
    assert not (tmp_path / "none" / "eval" / "training_curves.png").exists()


def _lines_by_quantity(figure):
    """Every plotted series of a figure, by the quantity its label ends with (``chosen``, ``loss`` …)."""
    found = {}
    for axis in figure.axes:
        for line in axis.get_lines():
            found.setdefault(line.get_label().removeprefix("eval_").rsplit("/", 1)[-1], []).append(line)
    matplotlib.pyplot.close(figure)
    return found


def test_a_short_run_draws_markers_and_each_quantity_keeps_its_colour():
    # `demo --max_steps 4` logs the training quantities once (at step 4) and evaluates once
    short = [
        {key: value for key, value in HISTORY[3].items()},
        {"eval_loss": 0.5, "eval_rewards/chosen": 0.2, "step": 4},
    ]
    figure = plots.curves_figure(short)
    assert [axis.get_xlim() for axis in figure.axes] == [(3.0, 5.0)] * 6  # whole steps around the one logged step
    lines = _lines_by_quantity(figure)
    assert sum(map(len, lines.values())) == 11  # 9 train series, 2 eval series, in 6 panels
    assert all(line.get_marker() == "o" and len(line.get_xdata()) == 1 for group in lines.values() for line in group)
    for quantity, colour in (("chosen", "#2a9d8f"), ("rejected", "#e76f51"), ("loss", "#264653")):
        assert {line.get_color() for line in lines[quantity]} == {colour}, quantity  # in every panel, train and eval
    assert len(lines["chosen"]) == 4 and len(lines["rejected"]) == 3  # rewards, logps, logratio (+ eval rewards)
    assert plots.OUTCOME_COLOURS["wins"] == "#2a9d8f" and plots.OUTCOME_COLOURS["losses"] == "#e76f51"
    long = [{"loss": 1.0 / s, "rewards/chosen": 0.01 * s, "step": s} for s in range(1, 201)] + [
        {"eval_loss": 0.3, "step": 200}
    ]
    for group in _lines_by_quantity(plots.curves_figure(long)).values():
        for line in group:  # a long train series is a bare line; eval points keep their markers
            assert line.get_marker() == ("o" if line.get_label().startswith("eval_") else "None"), line.get_label()


def test_several_checks_with_the_same_plot_get_their_own_files(tmp_path):
    outcome = {"win_rate": math.nan, "wins": 0, "ties": 0, "losses": 0, "failures": 3}  # no usable prompts
    results = [
        CheckResult("win_rate", False, outcome, (0.0, 1.0), 0.5),
        CheckResult(
            "win_rate/gpt", False, dict(outcome, win_rate=0.6, wins=3, ties=0, losses=2, failures=0), (0.2, 0.9), 0.5
        ),
    ]
    report = write_report(results, tmp_path, [])
    assert report["files"] == ["report.json", "report.md", "win_rate_win_rate.png", "win_rate_win_rate_gpt.png"]
    for name in report["files"][2:]:
        assert _png_shape(tmp_path / "eval" / name)[:2] == (round(3.4 * DPI), round(9 * DPI))


def test_report_input_errors(tmp_path):
    with pytest.raises(ValueError, match="extra may not set"):
        write_report(_results(), tmp_path, [], extra={"passed": True})
    with pytest.raises(ValueError, match="unique"):
        write_report([_results()[0], _results()[0]], tmp_path, [])

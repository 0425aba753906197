"""`dpo-plugin demo` plumbing, run on the tiny model (the real demo trains SmolLM2 for minutes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "dpo_plugin" / "testing" / "tiny-model")
OVERRIDES = [
    "--model_name_or_path",
    TINY,
    "--adapter",
    "none",
    "--adapter_params",
    "{}",
    "--max_steps",
    "2",
    "--max_length",
    "96",
    "--check_params",
    '{"win_rate": {"max_new_tokens": 3, "max_prompts": 6, "samples": 6}}',
]


def _demo(tmp_path, *args):
    command = [
        str(Path(sys.executable).with_name("dpo-plugin")),
        "demo",
        "--output-dir",
        str(tmp_path),
        *args,
        *OVERRIDES,
    ]
    return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)


def test_demo_trains_checks_and_reports(tmp_path):
    result = _demo(tmp_path)
    # a tiny random model does not learn arithmetic in two steps: the checks run and do not pass
    assert result.returncode == 1, result.stderr[-3000:]
    assert (
        "losses: sigmoid+sft" in result.stdout
        and "win_rate" in result.stdout
        and "Overall: NOT PASSED" in result.stdout
    )
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["losses"] == ["sigmoid", "sft"] and report["checks"]["win_rate"]["metrics"]["n"] == 6


def test_demo_compare_tabulates_each_mix(tmp_path):
    result = _demo(tmp_path, "--compare", "sigmoid,sigmoid+sft")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("losses "))
    assert lines[header + 2].split()[0] == "sigmoid" and lines[header + 3].split()[0] == "sigmoid+sft"
    assert "/6" in lines[header + 2]  # exact answers out of the 6 sampled prompts
    for mix in ("sigmoid", "sigmoid+sft"):
        assert (tmp_path / mix / "eval" / "report.json").exists()


def test_fresh_output_dir_keeps_earlier_demos(tmp_path, monkeypatch):
    from dpo_plugin.demo.run import fresh_output_dir

    monkeypatch.chdir(tmp_path)
    assert fresh_output_dir() == "runs/demo"
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    assert fresh_output_dir() == "runs/demo-2"
    (tmp_path / "runs" / "demo-2").mkdir()
    (tmp_path / "runs" / "demo-4").mkdir()
    assert fresh_output_dir() == "runs/demo-3"


def test_flags_the_demo_sets_itself_are_refused_before_loading(tmp_path):
    for flag, instead in [("--loss_type=sigmoid", "--compare"), ("--config", "dpo-plugin train")]:
        command = [str(Path(sys.executable).with_name("dpo-plugin")), "demo", flag, "x"]
        result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 2 and f"use {instead}" in result.stderr, result.stderr
        assert list(tmp_path.iterdir()) == []  # nothing written

"""`dpo-plugin demo` plumbing, run on the tiny model (the real demo trains SmolLM2 for minutes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY = str(REPO / "dpo_plugin" / "data" / "tiny-model")
OVERRIDES = [
    "--model_name_or_path", TINY, "--adapter", "none", "--adapter_params", "{}", "--max_steps", "2",
    "--max_length", "96", "--check_params", '{"win_rate": {"max_new_tokens": 3, "max_prompts": 6, "samples": 6}}',
]  # fmt: skip


def _demo(tmp_path, *args):
    command = [str(Path(sys.executable).with_name("dpo-plugin")), "demo", "--output-dir", str(tmp_path), *args, *OVERRIDES]
    return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)


def test_demo_trains_checks_and_reports(tmp_path):
    result = _demo(tmp_path)
    # a tiny random model does not learn arithmetic in two steps: the checks run and do not pass
    assert result.returncode == 1, result.stderr[-3000:]
    assert "losses: sigmoid+sft" in result.stdout and "win_rate" in result.stdout and "Overall: NOT PASSED" in result.stdout
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

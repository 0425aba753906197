"""Third-party plugin packages, pip-installed, register a loss, a judge and a check that a YAML selects.

The packages are the ones docs/writing-plugins.md shows (integration/example_plugin, example_judge,
example_check). Nothing in dpo_plugin changes: each package only declares an entry point in the
`dpo_plugin` group. They are installed in one pip call and uninstalled afterwards.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "integration" / "example_plugin"
JUDGE_PACKAGE = REPO / "integration" / "example_judge"
CHECK_PACKAGE = REPO / "integration" / "example_check"
DISTRIBUTIONS = ("dpo-plugin-example-loss", "dpo-plugin-example-judge", "dpo-plugin-example-check")
CLI = str(Path(sys.executable).with_name("dpo-plugin"))
#: the commands load these plugins (tests/conftest.py has the suite load none, whatever else is installed)
ENV = {**os.environ, "DPO_PLUGIN_LOAD_PLUGINS": ",".join(DISTRIBUTIONS)}


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True)


@pytest.fixture(scope="module")
def installed_plugin():
    _pip("install", "--no-deps", "--no-build-isolation", str(PACKAGE), str(JUDGE_PACKAGE), str(CHECK_PACKAGE))
    try:
        yield
    finally:
        _pip("uninstall", "-y", *DISTRIBUTIONS)


def test_installed_plugin_is_listed(installed_plugin):
    listing = json.loads(
        subprocess.run([CLI, "plugins", "--json"], capture_output=True, text=True, check=True, env=ENV).stdout
    )
    plugin = next(p for p in listing["plugins"] if p["name"] == "example_loss")
    assert plugin["distribution"] == "dpo-plugin-example-loss" and plugin["version"] == "0.1.0"
    assert plugin["registered"]["losses"] == ["squared_hinge"]
    assert listing["losses"]["squared_hinge"]["params"] == {"beta": 0.1, "margin": 1.0}
    judge = next(p for p in listing["plugins"] if p["name"] == "example_judge")
    check = next(p for p in listing["plugins"] if p["name"] == "example_check")
    assert judge["distribution"] == "dpo-plugin-example-judge" and judge["registered"]["judges"] == ["concise"]
    assert check["distribution"] == "dpo-plugin-example-check" and check["registered"]["checks"] == ["length_growth"]


def test_yaml_selects_the_plugin_loss(installed_plugin, tmp_path):
    config = {
        "model_name_or_path": str(REPO / "dpo_plugin" / "testing" / "tiny-model"),
        "dataset_name": str(REPO / "dpo_plugin" / "demo" / "data"),
        "output_dir": str(tmp_path / "run"),
        "bf16": False,
        "report_to": "none",
        "gradient_checkpointing": False,
        "per_device_train_batch_size": 4,
        "max_steps": 2,
        "logging_steps": 1,
        "save_strategy": "no",
        "max_length": 128,
        "loss_type": "squared_hinge",
        "loss_params": {"squared_hinge": {"margin": 2.0}},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([CLI, "train", "--config", str(path)], capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]
    steps = [entry for entry in history if "loss/squared_hinge" in entry]
    assert len(steps) == 2
    # step 1: policy == reference, so Δ = 0 and the loss is max(0, margin − 0)² = 4 for every pair
    assert steps[0]["loss/squared_hinge"] == pytest.approx(4.0, abs=1e-5)
    assert steps[0]["squared_hinge/active"] == pytest.approx(1.0)


def test_yaml_uses_the_plugin_judge_and_check(installed_plugin, tmp_path):
    """The tiny YAML, 2 steps, with the example check and win_rate judged by the example judge."""
    config = yaml.safe_load((REPO / "dpo_plugin" / "testing" / "tiny.yaml").read_text())
    generation = {"max_prompts": 4, "max_new_tokens": 8}
    config.update(
        model_name_or_path=str(REPO / "dpo_plugin" / "testing" / "tiny-model"),
        dataset_name=str(REPO / "dpo_plugin" / "demo" / "data"),
        output_dir=str(tmp_path / "run"),
        max_steps=2,
        logging_steps=1,
        checks=["length_growth", "win_rate"],
        check_params={"length_growth": generation, "win_rate": {**generation, "samples": 4}},
        judge="concise",
        judge_params={
            "keyword": "The"
        },  # after 2 steps of sigmoid+sft the policy starts "The an…"; the random reference does not
    )
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([CLI, "train", "--config", str(path)], capture_output=True, text=True, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "eval" / "report.json").read_text())
    assert set(report["checks"]) == {"length_growth", "win_rate"}

    growth = report["checks"]["length_growth"]
    assert "skipped" not in growth and growth["threshold"] == 1.5
    assert set(growth["metrics"]) == {"ratio", "policy_words", "reference_words"}
    assert growth["passed"] == (growth["metrics"]["ratio"] <= 1.5)
    assert len(growth["details"]["samples"]) == 4

    # win_rate's verdicts are the concise judge's: recompute each sample's outcome with it, both orders
    from dpo_plugin.evaluation.checks.win_rate import VERDICT_NAMES
    from dpo_plugin.evaluation.verdicts import prompt_outcome

    importlib.invalidate_caches()
    concise = importlib.import_module("dpo_plugin_example_judge").ConciseJudge(keyword="The")
    win_rate = report["checks"]["win_rate"]
    assert "skipped" not in win_rate and win_rate["details"]["judge_errors"] == []
    samples = win_rate["details"]["samples"]
    assert len(samples) == 4 and win_rate["metrics"]["failures"] == 0
    for sample in samples:
        policy, reference = sample["policy"], sample["reference"]
        outcome = prompt_outcome(
            concise.judge_pair(None, policy, reference), concise.judge_pair(None, reference, policy)
        )
        assert sample["verdict"] == VERDICT_NAMES[outcome], sample
    # …and they discriminate: the keyword decides some prompts for the policy (a tie-only run would prove nothing)
    assert win_rate["metrics"]["wins"] >= 1, samples
    assert "length_growth" in (tmp_path / "run" / "eval" / "report.md").read_text()


def test_uninstalled_plugin_is_gone(installed_plugin):
    _pip("uninstall", "-y", "dpo-plugin-example-loss")
    try:
        listing = subprocess.run([CLI, "plugins", "--json"], capture_output=True, text=True, check=True, env=ENV).stdout
        assert "squared_hinge" not in json.loads(listing)["losses"]
    finally:
        _pip("install", "--no-deps", "--no-build-isolation", str(PACKAGE))

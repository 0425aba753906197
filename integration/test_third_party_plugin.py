"""A third-party plugin package, pip-installed, registers a loss that a YAML selects through `dpo-plugin train`.

Nothing in dpo_plugin changes: the package only declares an entry point in the `dpo_plugin` group.
The package is uninstalled afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "integration" / "example_plugin"
CLI = str(Path(sys.executable).with_name("dpo-plugin"))


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True)


@pytest.fixture(scope="module")
def installed_plugin():
    _pip("install", "--no-deps", "--no-build-isolation", str(PACKAGE))
    try:
        yield
    finally:
        _pip("uninstall", "-y", "dpo-plugin-example-loss")


def test_installed_plugin_is_listed(installed_plugin):
    listing = json.loads(subprocess.run([CLI, "plugins", "--json"], capture_output=True, text=True, check=True).stdout)
    plugin = next(p for p in listing["plugins"] if p["name"] == "example_loss")
    assert plugin["distribution"] == "dpo-plugin-example-loss" and plugin["version"] == "0.1.0"
    assert plugin["registered"]["losses"] == ["squared_hinge"]
    assert listing["losses"]["squared_hinge"]["params"] == {"beta": 0.1, "margin": 1.0}


def test_yaml_selects_the_plugin_loss(installed_plugin, tmp_path):
    config = {
        "model_name_or_path": str(REPO / "dpo_plugin" / "data" / "tiny-model"),
        "dataset_name": str(REPO / "dpo_plugin" / "data" / "demo"),
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
    result = subprocess.run([CLI, "train", "--config", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((tmp_path / "run" / "trainer_state.json").read_text())["log_history"]
    steps = [entry for entry in history if "loss/squared_hinge" in entry]
    assert len(steps) == 2
    # step 1: policy == reference, so Δ = 0 and the loss is max(0, margin − 0)² = 4 for every pair
    assert steps[0]["loss/squared_hinge"] == pytest.approx(4.0, abs=1e-5)
    assert steps[0]["squared_hinge/active"] == pytest.approx(1.0)


def test_uninstalled_plugin_is_gone(installed_plugin):
    _pip("uninstall", "-y", "dpo-plugin-example-loss")
    try:
        listing = subprocess.run([CLI, "plugins", "--json"], capture_output=True, text=True, check=True).stdout
        assert "squared_hinge" not in json.loads(listing)["losses"]
    finally:
        _pip("install", "--no-deps", "--no-build-isolation", str(PACKAGE))

"""`dpo-plugin train` under torchrun with two CPU processes (gloo), and the precomputed reference's
cache from two processes against one: the same files (same fingerprints), the same log-probs.

(`accelerate launch --cpu --num_processes 2` starts one process; torchrun is how to run several on CPU.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TINY_YAML = str(REPO / "dpo_plugin" / "testing" / "tiny.yaml")


def _train(tmp_path: Path, name: str, launcher: list[str]) -> subprocess.CompletedProcess:
    args = [
        "train",
        "--config",
        TINY_YAML,
        "--max_steps",
        "2",
        "--output_dir",
        str(tmp_path / name),
        "--reference",
        "precomputed",
        "--reference_params",
        json.dumps({"cache_dir": str(tmp_path / name / "cache")}),
        "--checks",
        "reward_margin",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*launcher, *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)


@pytest.mark.slow
def test_two_processes_train_together_and_precompute_the_same_reference_as_one(tmp_path):
    two = _train(tmp_path, "two", [str(BIN / "torchrun"), "--nproc_per_node", "2", "-m", "dpo_plugin"])
    assert two.returncode == 0, two.stderr[-3000:]
    one = _train(tmp_path, "one", [str(BIN / "dpo-plugin")])
    assert one.returncode == 0, one.stderr[-3000:]

    # together: 2 steps × 8 pairs per process × 2 processes = 32 of the 320 pairs, epoch 0.1 (one process: 0.05)
    assert json.loads((tmp_path / "two" / "trainer_state.json").read_text())["epoch"] == pytest.approx(0.1)
    assert json.loads((tmp_path / "one" / "trainer_state.json").read_text())["epoch"] == pytest.approx(0.05)
    # the main process alone reports: one metrics table, one checks table, one report
    assert two.stdout.count("Trained model saved") == 1 and two.stdout.count("Overall:") == 1
    assert (
        json.loads((tmp_path / "two" / "eval" / "report.json").read_text())["checks"]["reward_margin"]["metrics"]["n"]
        == 40
    )

    files_two = sorted(p.name for p in (tmp_path / "two" / "cache").iterdir())
    files_one = sorted(p.name for p in (tmp_path / "one" / "cache").iterdir())
    assert files_two == files_one and len(files_one) == 2  # train and eval, under the same fingerprints
    for name in files_one:
        a, b = load_file(str(tmp_path / "one" / "cache" / name)), load_file(str(tmp_path / "two" / "cache" / name))
        assert a["chosen"].shape in {(320,), (40,)}
        torch.testing.assert_close(b["chosen"], a["chosen"], rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(b["rejected"], a["rejected"], rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_two_processes_stop_together_when_training_diverges(tmp_path):
    """Every process decides on the same step: both exit 3 naming it (no process waits forever for the other)."""
    from dpo_plugin.faults import DIVERGED_EXIT_CODE

    args = [
        "train",
        "--config",
        TINY_YAML,
        "--max_steps",
        "3",
        "--learning_rate",
        "1e4",
        "--loss_type",
        "sigmoid",
        "--loss_weights",
        "1.0",
        "--output_dir",
        str(tmp_path / "out"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [str(BIN / "torchrun"), "--nproc_per_node", "2", "-m", "dpo_plugin", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    assert done.returncode != 0 and not (tmp_path / "out" / "model.safetensors").exists()
    # both processes stop at the same step, for the same cause (their lines may interleave)
    assert done.stderr.count("error: Training stopped at step 2: the gradients became non-finite") == 2, done.stderr[
        -3000:
    ]
    assert f"(exitcode: {DIVERGED_EXIT_CODE})" in done.stderr

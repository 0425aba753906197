"""Real signals outside the training steps: SIGTERM while a slow judge judges (the trained model is already saved,
and the printed `dpo-plugin evaluate` command runs the checks on it), SIGINT during the precomputed reference pass
(nothing trained yet: exit 75, the folder left as it was)."""

from __future__ import annotations

import json
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from fault_injection import DEMO_DATA, environment, output, read_until, start
from safetensors.torch import load_file

from dpo_plugin.faults import PREEMPTED_EXIT_CODE
from dpo_plugin.output_folder import MANIFEST

SLOW_JUDGE = """
import pathlib, time

def judge(prompt, a, b):
    pathlib.Path("judging").touch()
    time.sleep(120)
    return 0.5
"""
QUICK_JUDGE = "def judge(prompt, a, b):\n    return 0.5\n"


def _error(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("error: "))


def test_sigterm_while_judging_keeps_the_saved_model_and_says_how_to_run_the_checks(tmp_path):
    (tmp_path / "slow_judge.py").write_text(SLOW_JUDGE)
    out = tmp_path / "out"
    judge = {"function": "slow_judge:judge", "timeout": 600}
    check_params = {"win_rate": {"max_prompts": 4, "max_new_tokens": 4, "samples": 2}}
    flags = ["--output_dir", str(out), "--max_steps", "2", "--save_strategy", "no", "--checks", "reward_margin"]
    flags += ["win_rate", "--judge", "function", "--judge_params", json.dumps(judge)]
    process = start(tmp_path, *flags, "--check_params", json.dumps(check_params))
    try:
        while not (tmp_path / "judging").exists():  # the judge is called: the checks are under way
            assert process.poll() is None, output(process)[-3000:]
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == PREEMPTED_EXIT_CODE, output(process)[-3000:]  # not after the judge's 120 s
    finally:
        process.kill()
    message = _error(output(process))
    prefix = f"error: Stopped by SIGTERM during the post-training checks. The trained model is saved in {out}. "
    assert message.startswith(prefix + "Run the checks on it with: dpo-plugin evaluate ")
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
    assert load_file(str(out / "model.safetensors")) and {"model.safetensors", "trainer_state.json"} <= set(
        json.loads((out / MANIFEST).read_text())["written"]
    )
    assert not (out / "eval" / "report.json").exists()

    (tmp_path / "slow_judge.py").write_text(QUICK_JUDGE)  # the judge fixed, the printed command runs the checks
    command = shlex.split(message.split("Run the checks on it with: ", 1)[1])
    assert command[:2] == ["dpo-plugin", "evaluate"] and command[command.index("--data") + 1] == DEMO_DATA
    evaluated = subprocess.run(
        [sys.executable, "-m", "dpo_plugin", *command[1:]],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads((out / "eval" / "report.json").read_text())
    assert set(report["checks"]) == {"reward_margin", "win_rate"}
    assert report["checks"]["win_rate"]["metrics"]["ties"] == 4  # the quick judge's 0.5 on each of the 4 prompts
    assert "eval" in json.loads((out / MANIFEST).read_text())["written"]


def _long_pairs(folder: Path, rows: int) -> str:
    """Distinct arithmetic pairs with long prompts (so that the reference pass takes seconds)."""
    generator = random.Random(0)
    folder.mkdir()
    with (folder / "train.jsonl").open("w") as handle:
        for i in range(rows):
            a, b = generator.randint(1, 999), generator.randint(1, 999)
            prompt = f"Question {i}: what is {a} + {b}? Explain step by step. " * 3
            pair = {"prompt": prompt, "chosen": f"The answer is {a + b}. " * 4, "rejected": f"It is {a + b + 1}. " * 4}
            handle.write(json.dumps(pair) + "\n")
    return str(folder)


def test_sigint_during_the_precomputed_reference_pass_exits_75_having_written_nothing(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    data = _long_pairs(tmp_path / "data", 1500)
    flags = ["--dataset_name", data, "--output_dir", str(out), "--max_steps", "2", "--max_length", "512"]
    flags += ["--reference", "precomputed", "--reference_params", json.dumps({"cache_dir": str(cache)})]
    process = start(tmp_path, *flags)
    try:
        read_until(process, "Reference log-probs (train)")
        process.send_signal(signal.SIGINT)  # Ctrl-C
        assert process.wait(timeout=60) == PREEMPTED_EXIT_CODE, output(process)[-3000:]
    finally:
        process.kill()
    assert _error(output(process)) == (
        "error: Stopped by SIGINT during the reference's set-up (precomputed). Nothing was trained or saved yet; "
        "run the same command again to start over."
    )
    assert not out.exists()  # the lock's folder, created by this run and left empty, is gone again
    assert "Traceback" not in output(process)
